"""Run the simulated plant faster than real time and emit canonical telemetry.

Deterministic under a seed: the same settings give the same values.  Sequence numbers
and the simulated clock continue across runs (see :mod:`.checkpoint`): a run covers
``simulated_minutes`` starting where the previous run ended, or ending at "now" for a
plant's first run, so consecutive runs never overlap in event time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from plantstream.contract import Telemetry
from plantstream.contract.events import _Event
from plantstream.settings import Settings
from plantstream.simulator.checkpoint import SimulatorCheckpoint
from plantstream.simulator.engine import PlantSimulator, snapshot_telemetry
from plantstream.simulator.ground_truth import GroundTruthLog
from plantstream.simulator.plant import Machine, default_plant
from plantstream.simulator.plant_config import plant_from_machines


@dataclass(frozen=True)
class SimulationRun:
    machines: list[Machine]
    steps: int
    start_ms: int
    period_ms: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.steps * self.period_ms

    @property
    def events(self) -> int:
        return self.steps * sum(len(m.signals) for m in self.machines)


def plan_run(settings: Settings, *, resume_from_ms: int | None = None, now_ms: int | None = None) -> SimulationRun:
    """The next run: up to ``simulated_minutes`` long, never before ``resume_from_ms`` and
    never after now.

    A real plant cannot report readings from the future (and the stream dead-letters
    event times far ahead of their hand-off to Kafka), so a run that continues the
    previous one right away covers only the time since it ended: ``steps`` may be 0.
    """
    sim = settings.simulator
    period_ms = round(sim.sample_period_s * 1000)
    wanted = max(1, round(sim.simulated_minutes * 60_000 / period_ms))
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    start_ms = now_ms - wanted * period_ms
    if resume_from_ms is not None:
        start_ms = max(start_ms, resume_from_ms)
    steps = max(0, min(wanted, (now_ms - start_ms) // period_ms))
    return SimulationRun(default_plant(sim.machines, settings.site), steps, start_ms, period_ms)


def simulator_dir(settings: Settings) -> Path:
    return settings.state_dir / "simulator"


def generate_plant(
    settings: Settings,
    run: SimulationRun,
    checkpoint: SimulatorCheckpoint,
    ground_truth: GroundTruthLog | None,
    on_step: Callable[[int], None] = lambda _step: None,
) -> Iterator[tuple[str, _Event]]:
    """Yield ``(stream, event)`` for every event of the run in time order: each step's
    readings of every machine and signal (telemetry), then its machine events, parts and
    energy readings.

    The plant is stepped by the same engine that serves the protocols
    (:class:`.engine.PlantSimulator`: AI4I physics, states, ground truth), with random
    faults off so every step yields every signal of every machine.  Every stream is
    numbered from the checkpoint; ``ingest_ts`` is left to the producer (the hand-off).
    The same checkpoint gives the same events: a failed run is regenerated identically.
    """
    sim = settings.simulator
    plant = plant_from_machines(run.machines, seed=sim.seed, sample_period_s=run.period_ms / 1000)
    # Each run draws fresh randomness (the seed moves on with the sequence numbers), so
    # consecutive runs continue the plant instead of repeating it.
    engine = PlantSimulator(
        plant,
        run.start_ms - run.period_ms,  # the engine stamps a step at the end of its period
        ground_truth,
        seed=sim.seed + sum(checkpoint.peek().values()),
        faults=False,
        take_seq=checkpoint.take,
    )
    for step in range(run.steps):
        snapshot = engine.step()
        for event in snapshot_telemetry(snapshot, checkpoint.take):
            yield "telemetry", event
        for stream, events in (("events", snapshot.events), ("quality", snapshot.parts), ("energy", snapshot.energy)):
            for event in events:
                yield stream, event
        on_step(step)


def generate_telemetry(
    settings: Settings,
    run: SimulationRun,
    checkpoint: SimulatorCheckpoint,
    ground_truth: GroundTruthLog,
    on_step: Callable[[int], None] = lambda _step: None,
) -> Iterator[Telemetry]:
    """The telemetry of :func:`generate_plant` (tests of the numbering and the physics)."""
    for stream, event in generate_plant(settings, run, checkpoint, ground_truth, on_step):
        if stream == "telemetry":
            yield event  # type: ignore[misc]
