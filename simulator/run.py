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

import numpy as np

from plantstream.contract import Quality, Telemetry
from plantstream.contract.signals import SIGNALS
from plantstream.settings import Settings
from plantstream.simulator.checkpoint import SimulatorCheckpoint
from plantstream.simulator.ground_truth import GroundTruthEntry, GroundTruthLog
from plantstream.simulator.physics import PlantPhysics
from plantstream.simulator.plant import Machine, default_plant

READ_DELAY_MS = 5  # the gateway reads a value a few ms after the device stamped it


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
    """The next run: ``simulated_minutes`` long, never before ``resume_from_ms``."""
    sim = settings.simulator
    period_ms = round(sim.sample_period_s * 1000)
    steps = max(1, round(sim.simulated_minutes * 60_000 / period_ms))
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    start_ms = now_ms - steps * period_ms
    if resume_from_ms is not None:
        start_ms = max(start_ms, resume_from_ms)
    return SimulationRun(default_plant(sim.machines, settings.site), steps, start_ms, period_ms)


def simulator_dir(settings: Settings) -> Path:
    return settings.state_dir / "simulator"


def generate_telemetry(
    settings: Settings,
    run: SimulationRun,
    checkpoint: SimulatorCheckpoint,
    ground_truth: GroundTruthLog,
    on_step: Callable[[int], None] = lambda _step: None,
) -> Iterator[Telemetry]:
    """Yield every reading of the run in time order (one event per machine and signal)."""
    rng = np.random.default_rng(settings.simulator.seed + sum(checkpoint.peek().values()))
    physics = PlantPhysics([m.product_quality for m in run.machines], rng)
    units = {name: spec.unit for name, spec in SIGNALS.items()}
    dt_s = run.period_ms / 1000
    for step in range(run.steps):
        ts = run.start_ms + step * run.period_ms
        for failure in physics.step(dt_s):
            ground_truth.write(
                GroundTruthEntry(
                    ts=ts,
                    machine_id=run.machines[failure.machine_index].machine_id,
                    kind="failure",
                    mode=failure.mode,
                    duration_s=failure.repair_s,
                    detail=failure.detail,
                )
            )
        values = physics.signal_values()
        ingest_ts = int(time.time() * 1000)
        for index, machine in enumerate(run.machines):
            for signal in machine.signals:
                yield Telemetry(
                    site=machine.site,
                    area=machine.area,
                    line=machine.line,
                    machine_id=machine.machine_id,
                    seq=checkpoint.take(machine.machine_id),
                    source_ts=ts,
                    read_ts=ts + READ_DELAY_MS,
                    ingest_ts=ingest_ts,
                    signal=signal,
                    value=round(float(values[signal][index]), 4),
                    unit=units[signal],
                    quality=Quality.GOOD,
                )
        on_step(step)
