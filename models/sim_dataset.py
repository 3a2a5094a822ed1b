"""Simulated training data: minute aggregates, ground truth and machine events of a plant.

Weeks of a 50-machine plant straight from :class:`plantstream.simulator.engine.PlantSimulator`
(no Kafka, no services).  Going through contract events would cost ~0.4 ms per step
(1.8M steps for three weeks at 1 s): half of that is the engine building a Python
dict of rounded values per machine per step (``PlantSimulator._readings``).  With
faults off, a reading is exactly the physics' value rounded to 4 decimals, so this
module keeps the readings as numpy arrays (one ``(signals x machines)`` matrix per
step), buffers one minute of them and aggregates the minute in one vectorised pass
with the definitions of :func:`plantstream.domain.aggregates.window_aggregates`
(count, min, max, mean, population std, linear p95, last).
``tests/unit/test_features.py`` checks on a short run that the result equals
``window_aggregates`` over the stock engine's telemetry with the same seed.

The engine is otherwise used as is: the same plant file model, physics, schedule
(planned downtime), ground truth and machine events; the readings-as-arrays subclass
consumes the physics' random stream exactly as the stock engine does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from plantstream.contract.events import MachineEventType
from plantstream.domain.aggregates import P95, WINDOW_AGGREGATE_SCHEMA
from plantstream.models.features import FEATURE_SIGNALS, MINUTE_MS
from plantstream.simulator.engine import PlantSimulator, Reading, utc_ms
from plantstream.simulator.plant import default_plant
from plantstream.simulator.plant_config import PlannedDowntime, PlantConfig, plant_from_machines

DEFAULT_START_MS = utc_ms(2026, 1, 5)  # a Monday, 00:00 UTC
READING_DECIMALS = 4  # the engine serves round(value, 4)


@dataclass(frozen=True)
class SimDataset:
    """What the lakehouse would hold after a simulated run, ready for features and labels.

    * ``minute_aggregates``: :data:`WINDOW_AGGREGATE_SCHEMA` rows, ``window_seconds = 60``;
    * ``ground_truth``: ``ts``, ``machine_id``, ``kind`` (failure / maintenance /
      planned_downtime), ``mode``, ``duration_s``;
    * ``machine_events``: the engine's ``MachineEvent`` state changes (no
      ``CycleCompleted``): ``ts``, ``machine_id``, ``event_type``, ``state``, ``reason``;
    * ``machines``: ``machine_id``, ``machine_type``, ``product_quality``.
    """

    minute_aggregates: pa.Table
    ground_truth: pd.DataFrame
    machine_events: pd.DataFrame
    machines: pd.DataFrame
    start_ms: int
    end_ms: int
    sample_period_s: float
    cycles: int  # production cycles completed (one AI4I record each)
    timings: dict[str, float] = field(default_factory=dict)


class _ArrayReadingSimulator(PlantSimulator):
    """The engine with readings left as arrays (faults off: a reading is the rounded value).

    ``_readings`` is the one step of the engine that works per machine in Python; it
    draws from the physics' random stream once (``signal_values``), and so does this
    override, so the plant evolves exactly as under the stock engine.
    """

    def __init__(self, plant: PlantConfig, start_ms: int, *, seed: int | None = None) -> None:
        super().__init__(plant, start_ms, None, seed=seed, faults=False)
        self.values: dict[str, np.ndarray] = {}

    def _readings(self, ts: int) -> list[Reading]:
        self.values = self.physics.signal_values()
        return []


def simulation_plant(machines: int, *, seed: int, sample_period_s: float, planned_downtime: bool = True) -> PlantConfig:
    """The load generator's plant (mills, presses, robots, conveyors; AI4I's L/M/H mix),
    producing around the clock, with a daily 30-minute cleaning stop per line (so planned
    downtime is in the data and the labels can leave it out)."""
    plant = plant_from_machines(default_plant(machines, "plant-1"), seed=seed, sample_period_s=sample_period_s)
    if planned_downtime:
        lines = sorted({m.line for m in plant.machines()})
        stops = [
            PlannedDowntime(name=f"cleaning-{line}", start=f"{12 + i % 6:02d}:00", duration_min=30, lines=[line])
            for i, line in enumerate(lines)
        ]
        plant = plant.model_copy(update={"planned_downtime": stops})
    return plant


class _MinuteAccumulator:
    """Buffers one minute of readings per (signal, machine) pair and aggregates it at once."""

    def __init__(self, pairs: int, max_steps_per_minute: int, minutes: int) -> None:
        self.buffer = np.empty((max_steps_per_minute, pairs))
        self.filled = 0
        self.last_ts = 0
        self.window = -1
        shape = (minutes, pairs)
        self.out = {k: np.empty(shape) for k in ("min", "max", "mean", "std", "p95", "last")}
        self.count = np.empty(minutes, dtype=np.int64)
        self.window_start = np.empty(minutes, dtype=np.int64)
        self.last_ts_of = np.empty(minutes, dtype=np.int64)
        self.minutes = 0

    def add(self, ts: int, values: np.ndarray) -> None:
        window = ts - ts % MINUTE_MS
        if window != self.window:
            self.flush()
            self.window = window
        self.buffer[self.filled] = values
        self.filled += 1
        self.last_ts = ts

    def flush(self) -> None:
        """Aggregate the buffered minute as ``window_aggregates`` does (same formulas)."""
        n = self.filled
        if n == 0:
            return
        block = self.buffer[:n]
        i = self.minutes
        mean = block.sum(axis=0) / n
        deviation = block - mean
        ordered = np.sort(block, axis=0)
        position = (n - 1) * P95
        low = int(np.floor(position))
        high = min(low + 1, n - 1)
        fraction = position - low
        self.out["min"][i] = ordered[0]
        self.out["max"][i] = ordered[-1]
        self.out["mean"][i] = mean
        self.out["std"][i] = np.sqrt((deviation * deviation).sum(axis=0) / n)
        self.out["p95"][i] = ordered[low] + (ordered[high] - ordered[low]) * fraction
        self.out["last"][i] = block[-1]
        self.count[i] = n
        self.window_start[i] = self.window
        self.last_ts_of[i] = self.last_ts
        self.minutes += 1
        self.filled = 0


def simulate_dataset(
    *,
    machines: int = 50,
    days: float = 21.0,
    seed: int = 2020,
    sample_period_s: float = 1.0,
    start_ms: int = DEFAULT_START_MS,
    planned_downtime: bool = True,
    signals: tuple[str, ...] = FEATURE_SIGNALS,
) -> SimDataset:
    """Run the plant for ``days`` and return its minute aggregates, ground truth and events.

    ``signals``: which signals to aggregate (default: those the features read; the
    engine's ``cycle_count`` counter is left out).  Readings are stamped with the
    step's time (faults off: no clock skew), so their windows are epoch minutes.
    Deterministic for given arguments.
    """
    started = time.perf_counter()
    plant = simulation_plant(machines, seed=seed, sample_period_s=sample_period_s, planned_downtime=planned_downtime)
    sim = _ArrayReadingSimulator(plant, start_ms, seed=seed)
    machine_list = sim.machines
    # (signal, machine) pairs the machines expose, in (machine, signal) order.
    pairs = [(s, i) for i, m in enumerate(machine_list) for s in signals if s in m.signals]
    signal_order = list(dict.fromkeys(s for s, _ in pairs))
    flat = np.array([signal_order.index(s) * len(machine_list) + i for s, i in pairs], dtype=np.int64)
    steps = round(days * 86_400_000 / sim.period_ms)
    per_minute = -(-MINUTE_MS // sim.period_ms) + 1
    acc = _MinuteAccumulator(len(pairs), per_minute, steps * sim.period_ms // MINUTE_MS + 2)
    truth: list[tuple[int, str, str, str, float]] = []
    events: list[tuple[int, str, str, str, str]] = []
    skip = MachineEventType.CYCLE_COMPLETED
    cycles = 0
    for _ in range(steps):
        snapshot = sim.step()
        matrix = np.stack([sim.values[s] for s in signal_order]).ravel()[flat]
        acc.add(snapshot.ts, np.round(matrix, READING_DECIMALS))
        for g in snapshot.ground_truth:
            truth.append((g.ts, g.machine_id, g.kind, g.mode, g.duration_s))
        for e in snapshot.events:
            if e.event_type is skip:
                cycles += 1
            else:
                events.append((e.event_ts, e.machine_id, e.event_type.value, e.state or "", e.reason or ""))
    acc.flush()
    stepped = time.perf_counter()
    table = _aggregate_table(acc, pairs, signal_order, [m.machine_id for m in machine_list])
    return SimDataset(
        minute_aggregates=table,
        ground_truth=pd.DataFrame(truth, columns=["ts", "machine_id", "kind", "mode", "duration_s"]),
        machine_events=pd.DataFrame(events, columns=["ts", "machine_id", "event_type", "state", "reason"]),
        machines=pd.DataFrame(
            {
                "machine_id": [m.machine_id for m in machine_list],
                "machine_type": [m.machine_type.value for m in machine_list],
                "product_quality": [m.product_quality for m in machine_list],
            }
        ),
        start_ms=start_ms,
        end_ms=start_ms + steps * sim.period_ms,
        sample_period_s=sample_period_s,
        cycles=cycles,
        timings={"simulate_s": stepped - started, "table_s": time.perf_counter() - stepped, "steps": float(steps)},
    )


def _aggregate_table(acc: _MinuteAccumulator, pairs: list[tuple[str, int]], signals: list[str], ids: list[str]):
    """The accumulated minutes as a :data:`WINDOW_AGGREGATE_SCHEMA` table, by (machine, signal, window)."""
    minutes, n_pairs = acc.minutes, len(pairs)
    pair_index = np.repeat(np.arange(n_pairs), minutes)  # pair-major: rows grouped per (machine, signal)
    minute_index = np.tile(np.arange(minutes), n_pairs)
    machine_codes = pa.array(np.array([i for _, i in pairs], dtype=np.int32)[pair_index])
    signal_codes = pa.array(np.array([signals.index(s) for s, _ in pairs], dtype=np.int32)[pair_index])
    start = acc.window_start[:minutes][minute_index]
    ts_type = WINDOW_AGGREGATE_SCHEMA.field("window_start").type

    def stat(name: str) -> pa.Array:
        return pa.array(acc.out[name][:minutes].T.ravel())

    columns = {
        "machine_id": pa.DictionaryArray.from_arrays(machine_codes, pa.array(ids)).cast(pa.string()),
        "signal": pa.DictionaryArray.from_arrays(signal_codes, pa.array(signals)).cast(pa.string()),
        "window_seconds": pa.array(np.full(len(start), 60, dtype=np.int32)),
        "window_start": pa.array(start).cast(ts_type),
        "window_end": pa.array(start + MINUTE_MS).cast(ts_type),
        "count": pa.array(acc.count[:minutes][minute_index]),
        "min": stat("min"),
        "max": stat("max"),
        "mean": stat("mean"),
        "std": stat("std"),
        "p95": stat("p95"),
        "last": stat("last"),
        "last_ts": pa.array(acc.last_ts_of[:minutes][minute_index]).cast(ts_type),
    }
    return pa.Table.from_pydict(columns, schema=WINDOW_AGGREGATE_SCHEMA)


def failure_rates(dataset: SimDataset) -> dict[str, float]:
    """Failures per 10,000 cycles by mode and the share of cycles failing (AI4I: 3.39 %).

    The check that a coarser ``sample_period_s`` keeps the physics' calibration
    (docs/simulator.md has AI4I's and the simulator's own figures).
    """
    failures = dataset.ground_truth[dataset.ground_truth["kind"] == "failure"]
    out = {f"{mode}_per_10k": float(n) / dataset.cycles * 10_000 for mode, n in failures.groupby("mode").size().items()}
    out["cycles"] = float(dataset.cycles)
    out["failing_cycle_share"] = len(failures.drop_duplicates(["machine_id", "ts"])) / dataset.cycles
    return out


__all__ = ["DEFAULT_START_MS", "SimDataset", "failure_rates", "simulate_dataset", "simulation_plant"]
