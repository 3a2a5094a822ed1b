"""Simulated plant history straight into bronze: the historian-import path.

Tests and the lakehouse benchmark need days or weeks of a plant's four streams in bronze,
and going through the edge, Kafka and the dataflow would take as long as the plant ran.
This module steps :class:`plantstream.simulator.engine.PlantSimulator` as fast as it goes
and appends what the plant produced to the four bronze Delta tables (``bronze/<stream>``,
:func:`plantstream.contract.columns.bronze_schema`) as a historian import would: the same
columns the stream writes, so silver and gold cannot tell the difference except by these
marks of an import:

* ``kafka_partition = -1`` (no Kafka partition has that number): the row never was in
  Kafka;
* ``kafka_offset``: a synthetic offset per row, continuing per stream across imports.  The
  last one written is the Delta application transaction ``plantstream.history.bronze:<stream>``
  of every import commit (the stream's bronze sink does the same per Kafka partition), so a
  second import numbers on where the first stopped and rows stay unique by
  ``(kafka_partition, kafka_offset)``;
* ``seq`` continues per machine and stream after the highest ``seq`` bronze already holds for
  that machine, so imported history never collides with (and is never deduplicated
  against) live events of the same machine.  An import is therefore *not* idempotent:
  running it twice adds the history twice, with new sequence numbers.

Readings are kept as arrays: the engine's only per-machine Python step is building the
``Reading`` dicts (``PlantSimulator._readings``, ~85 % of a step at 200 machines).  With
faults off a reading is exactly the physics' value rounded to 4 decimals, so
:class:`_ArraySimulator` keeps the physics' values instead (drawing from the random
stream exactly as the stock engine does) and telemetry columns are built for thousands of
steps at once.  Faults are therefore always off here: a historian holds the readings as
they were, and sensor faults belong to the live path's tests.  Machine events, parts and
energy readings are the engine's own contract events.

Commits run on one background thread (delta-rs releases the GIL), so writing one chunk
overlaps simulating the next.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from plantstream.contract import MachineEvent, Quality
from plantstream.contract.columns import BRONZE_PARTITION_COLUMNS, TIMESTAMP_MS_UTC, bronze_schema, contract_schema
from plantstream.contract.events import SCHEMA_VERSION, _Event
from plantstream.contract.signals import SIGNALS
from plantstream.contract.streams import ENERGY_STREAM, EVENTS_STREAM, QUALITY_STREAM, TELEMETRY_STREAM, StreamSpec
from plantstream.domain.machine_state import transition_events
from plantstream.settings import Settings
from plantstream.simulator.engine import READ_DELAY_MS, PlantSimulator, Reading
from plantstream.simulator.ground_truth import GroundTruthLog
from plantstream.simulator.physics import STATE_NAMES
from plantstream.simulator.plant import MachineType
from plantstream.simulator.plant_config import (
    MachineTypeConfig,
    PlannedDowntime,
    PlantConfig,
    load_plant,
    parse_plant,
)

HISTORY_PARTITION = -1
"""``kafka_partition`` of imported rows: no Kafka partition has this number."""
MS_PER_DAY = 86_400_000
READING_DECIMALS = 4  # the engine serves round(value, 4)
#: Telemetry rows per bronze commit: big enough for sizeable Parquet files, small enough
#: that a chunk (~150 bytes a row in Arrow) stays well under a GiB.
TELEMETRY_ROWS_PER_COMMIT = 4_000_000
_TYPE_ORDER = (MachineType.CNC_MILL, MachineType.PRESS, MachineType.ROBOT_CELL, MachineType.CONVEYOR)
_VARIANTS = ("L", "L", "L", "M", "M", "H")  # AI4I: 50 % L, 30 % M, 20 % H (roughly)


def history_app_id(spec: StreamSpec) -> str:
    """Delta application-transaction id of imports into ``bronze/<stream>``."""
    return f"plantstream.history.bronze:{spec.name}"


@dataclass(frozen=True)
class HistoryResult:
    """What :func:`write_history` wrote: the plant, the simulated span and rows per stream."""

    plant: PlantConfig
    start_ms: int
    end_ms: int  # exclusive: steps are at start_ms, start_ms + period, ..., end_ms - period
    steps: int
    rows: dict[str, int]
    commits: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def machines(self) -> int:
        return len(self.plant.machines())


def history_plant(
    machines: int,
    *,
    base: PlantConfig | None = None,
    seed: int | None = None,
    sample_period_s: float | None = None,
    signals: Mapping[MachineType | str, Sequence[str]] | None = None,
) -> PlantConfig:
    """A plant of ``machines`` machines shaped like ``base`` (default: the shipped plant).

    Lines of four (mill, press, robot cell, conveyor) named ``line-1``, ``line-2``, ...;
    every third line in area ``assembly``, the others in ``machining``; machine ids like
    the shipped plant's (``cnc-mill-001``, ``press-002``, ...), all ``kafka-direct`` (the
    import needs no endpoints).  Shifts and machine types (cycle times) are the base's; a
    daily 30-minute cleaning stop per line (``cleaning-l<n>``) at 10:00, 11:00 or 12:00
    (line 1, 2, 3, 4, ...), which for 12 machines is exactly the shipped plant's calendar.
    ``signals`` replaces a machine type's signal list (e.g. ten signals per machine).
    """
    if machines < 1:
        raise ValueError(f"machines must be >= 1, got {machines}")
    base = load_plant() if base is None else base
    lines: dict[str, list[dict[str, str]]] = {}
    for index in range(machines):
        line_no, slot = divmod(index, len(_TYPE_ORDER))
        kind = _TYPE_ORDER[slot]
        lines.setdefault(f"line-{line_no + 1}", []).append(
            {
                "id": f"{kind.value.replace('_', '-')}-{index + 1:03d}",
                "type": kind.value,
                "quality": _VARIANTS[index % 6],
            }
        )
    areas: dict[str, dict[str, dict[str, object]]] = {}
    for number, (line, members) in enumerate(lines.items(), start=1):
        area = "assembly" if number % 3 == 0 else "machining"
        areas.setdefault(area, {"lines": {}})["lines"][line] = {"machines": members}
    types = {kind: base.type_config(kind) for kind in _TYPE_ORDER}
    for name, names in (signals or {}).items():
        types[MachineType(name)] = types[MachineType(name)].model_copy(update={"signals": list(names)})
    downtime = [
        PlannedDowntime(name=f"cleaning-l{n}", start=f"{10 + (n - 1) % 3:02d}:00", duration_min=30, lines=[line])
        for n, line in enumerate(lines, start=1)
    ]
    return parse_plant(
        {
            "name": f"{base.name}-{machines}",
            "seed": base.seed if seed is None else seed,
            "sample_period_s": base.sample_period_s if sample_period_s is None else sample_period_s,
            "machine_types": {kind.value: _type_dump(cfg) for kind, cfg in types.items()},
            "sites": {base.machines()[0].site if base.machines() else "plant-1": {"areas": areas}},
            "shifts": [s.model_dump() for s in base.shifts],
            "planned_downtime": [d.model_dump() for d in downtime],
        },
        source=f"history plant of {machines} machines",
    )


def _type_dump(config: MachineTypeConfig) -> dict[str, object]:
    # Registers describe Modbus devices; an imported plant has none.
    return {"signals": config.signals, "cycle_s": config.cycle_s} if config.signals else {"cycle_s": config.cycle_s}


def write_plant_file(plant: PlantConfig, path: Path) -> Path:
    """Write ``plant`` as a plant file that :func:`load_plant` reads back to an equal model
    (point ``PLANTSTREAM_PLANT_FILE`` at it so gold uses the plant the history came from)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(plant.model_dump(mode="json"), sort_keys=False))
    return path


class _ArraySimulator(PlantSimulator):
    """The engine with faults off and readings left as the physics' arrays.

    ``_readings`` is the one step of the engine that works per machine in Python; it draws
    from the physics' random stream once (``signal_values``) and so does this override, so
    the plant evolves exactly as under the stock engine with faults off.
    """

    def __init__(self, plant: PlantConfig, start_ms: int, ground_truth: GroundTruthLog | None, seed: int) -> None:
        super().__init__(plant, start_ms, ground_truth, seed=seed, faults=False)
        self.values: dict[str, np.ndarray] = {}

    def _readings(self, ts: int) -> list[Reading]:
        self.values = self.physics.signal_values()
        return []

    def initial_state_events(self, ts: int) -> list[MachineEvent]:
        """Each machine's state at the start, as the first event of its history.

        The engine reports transitions only, but a machine's event history must start with
        a state (intervals run from state events, ``docs/oee.md``), as the gateway's first
        observation of a machine does (attribute ``initial="true"``).  Numbered by the
        engine, so its own events follow them.
        """
        events = []
        for index, machine in enumerate(self.machines):
            state, reason = STATE_NAMES[self.physics.state[index]], self.physics.reason[index]
            for change in transition_events(None, "", state, reason):
                attributes = change.attributes
                events.append(self._event(machine, ts, change.event_type, change.state, change.reason, **attributes))
        return events


class _BronzeAppender:
    """Appends chunks to the four bronze tables on one background thread, in order.

    Each commit carries the stream's history application transaction (the last synthetic
    offset written), so offsets continue across imports.  At most two commits wait: a
    slow store slows the simulation down instead of filling memory.
    """

    def __init__(self, settings: Settings) -> None:
        from deltalake import DeltaTable

        from plantstream.connect.s3 import delta_storage_options
        from plantstream.streaming.bronze_sink import bronze_writer_properties, ensure_bronze_table

        self.settings = settings
        self.storage = delta_storage_options(settings)
        self.properties = bronze_writer_properties()
        self.next_offset: dict[str, int] = {}
        self.next_seq: dict[str, dict[str, int]] = {}
        for spec in (TELEMETRY_STREAM, EVENTS_STREAM, QUALITY_STREAM, ENERGY_STREAM):
            ensure_bronze_table(settings, spec)
            table = DeltaTable(settings.lake.table_uri("bronze", spec.name), storage_options=self.storage)
            done = table.transaction_version(history_app_id(spec))
            self.next_offset[spec.name] = 0 if done is None else done + 1
            self.next_seq[spec.name] = _next_seq_by_machine(table)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-bronze")
        self._pending: list[Future[None]] = []
        self.commits = 0
        self.rows: dict[str, int] = {}
        self.write_s = 0.0

    def offsets(self, spec: StreamSpec, n: int) -> np.ndarray:
        first = self.next_offset[spec.name]
        self.next_offset[spec.name] = first + n
        return np.arange(first, first + n, dtype=np.int64)

    def submit(self, spec: StreamSpec, table: pa.Table) -> None:
        if not table.num_rows:
            return
        while len(self._pending) >= 2:
            self._pending.pop(0).result()
        last_offset = int(pc.max(table["kafka_offset"]).as_py())
        self.rows[spec.name] = self.rows.get(spec.name, 0) + table.num_rows
        self._pending.append(self._pool.submit(self._write, spec, table, last_offset))

    def _write(self, spec: StreamSpec, table: pa.Table, last_offset: int) -> None:
        from deltalake import CommitProperties, Transaction, write_deltalake

        started = time.perf_counter()
        write_deltalake(
            self.settings.lake.table_uri("bronze", spec.name),
            table,
            mode="append",
            partition_by=list(BRONZE_PARTITION_COLUMNS),
            storage_options=self.storage,
            writer_properties=self.properties,
            commit_properties=CommitProperties(app_transactions=[Transaction(history_app_id(spec), last_offset)]),
        )
        self.commits += 1
        self.write_s += time.perf_counter() - started

    def close(self) -> None:
        try:
            for future in self._pending:
                future.result()
        finally:
            self._pool.shutdown(wait=True)


def _next_seq_by_machine(table) -> dict[str, int]:  # table: deltalake.DeltaTable
    """Per machine, one more than the highest ``seq`` the bronze table holds."""
    dataset = table.to_pyarrow_dataset()
    if not table.file_uris():
        return {}
    highest = dataset.to_table(columns=["machine_id", "seq"]).group_by("machine_id").aggregate([("seq", "max")])
    return {
        m: int(s) + 1 for m, s in zip(highest["machine_id"].to_pylist(), highest["seq_max"].to_pylist(), strict=True)
    }


def _source_columns(offsets: np.ndarray, event_ms: np.ndarray) -> dict[str, pa.Array]:
    """What bronze adds to the contract's fields, for imported rows."""
    n = len(offsets)
    return {
        "kafka_partition": pa.array(np.full(n, HISTORY_PARTITION, dtype=np.int32)),
        "kafka_offset": pa.array(offsets),
        "event_ts": pa.array(event_ms, pa.int64()).cast(TIMESTAMP_MS_UTC),
        "event_date": pa.array((event_ms // MS_PER_DAY).astype(np.int32)).cast(pa.date32()),
    }


def _events_table(spec: StreamSpec, events: list[_Event], appender: _BronzeAppender) -> pa.Table:
    """Contract events as bronze rows; ``seq`` moved past what bronze held for the machine."""
    schema = bronze_schema(spec)
    if not events:
        return schema.empty_table()
    names = contract_schema(spec.payload).names
    columns = dict(zip(names, zip(*map(msgspec.structs.astuple, events), strict=True), strict=True))
    first = appender.next_seq[spec.name]
    columns["seq"] = tuple(s + first.get(m, 0) for m, s in zip(columns["machine_id"], columns["seq"], strict=True))
    arrays = {name: pa.array(columns[name], schema.field(name).type) for name in names}
    event_ms = pc.coalesce(arrays["source_ts"], arrays["read_ts"]).to_numpy(zero_copy_only=False)
    arrays.update(_source_columns(appender.offsets(spec, len(events)), event_ms))
    return pa.Table.from_pydict(arrays, schema=schema)


class _TelemetryBuffer:
    """Readings of many steps as one ``(steps x pairs)`` matrix, turned into bronze columns at once.

    A pair is (machine, signal) in machine order, each machine's signals in its own order:
    the order ``snapshot_telemetry`` numbers readings in, so ``seq`` counts the same way.
    """

    def __init__(self, sim: _ArraySimulator, appender: _BronzeAppender, rows_per_commit: int) -> None:
        machines = sim.machines
        self.signal_order = list(dict.fromkeys(s for m in machines for s in m.signals))
        pairs = [(i, s) for i, m in enumerate(machines) for s in m.signals]
        self.pair_machine = np.array([i for i, _ in pairs], dtype=np.int32)
        self.pair_signal = np.array([self.signal_order.index(s) for _, s in pairs], dtype=np.int32)
        self.pair_position = np.array([machines[i].signals.index(s) for i, s in pairs], dtype=np.int64)
        self.flat = self.pair_signal.astype(np.int64) * len(machines) + self.pair_machine
        self.signals_of = np.array([len(m.signals) for m in machines], dtype=np.int64)
        first = appender.next_seq[TELEMETRY_STREAM.name]
        self.first_seq = np.array([first.get(m.machine_id, 0) for m in machines], dtype=np.int64)
        self.machine_ids = pa.array([m.machine_id for m in machines])
        self.identity = {k: pa.array([getattr(m, k) for m in machines]) for k in ("site", "area", "line")}
        self.signal_names = pa.array(self.signal_order)
        self.units = pa.array([SIGNALS[s].unit for s in self.signal_order])
        self.steps_per_chunk = max(1, rows_per_commit // max(len(pairs), 1))
        self.values = np.empty((self.steps_per_chunk, len(pairs)))
        self.ts = np.empty(self.steps_per_chunk, dtype=np.int64)
        self.filled = 0
        self.steps_done = 0  # steps flushed before the current chunk
        self.appender = appender

    def add(self, ts: int, values: Mapping[str, np.ndarray]) -> None:
        self.values[self.filled] = np.stack([values[s] for s in self.signal_order]).ravel()[self.flat]
        self.ts[self.filled] = ts
        self.filled += 1
        if self.filled == self.steps_per_chunk:
            self.flush()

    def flush(self) -> None:
        k, p = self.filled, len(self.pair_machine)
        if not k:
            return
        machine = np.tile(self.pair_machine, k)
        signal = pa.array(np.tile(self.pair_signal, k))
        step = np.repeat(np.arange(self.steps_done, self.steps_done + k, dtype=np.int64), p)
        seq = self.first_seq[machine] + step * self.signals_of[machine] + np.tile(self.pair_position, k)
        source_ms = np.repeat(self.ts[:k], p)
        read_ms = source_ms + READ_DELAY_MS
        machine_index = pa.array(machine)
        n = k * p
        arrays: dict[str, pa.Array] = {
            "signal": self.signal_names.take(signal),
            "value": pa.array(np.round(self.values[:k].ravel(), READING_DECIMALS)),
            "unit": self.units.take(signal),
            "quality": pa.array(np.full(n, Quality.GOOD.value, dtype=object), pa.string()),
            "v": pa.array(np.full(n, SCHEMA_VERSION, dtype=np.int16)),
            **{key: names.take(machine_index) for key, names in self.identity.items()},
            "machine_id": self.machine_ids.take(machine_index),
            "seq": pa.array(seq),
            "source_ts": pa.array(source_ms),
            "read_ts": pa.array(read_ms),
            "ingest_ts": pa.array(read_ms),
            "state_seq": pa.nulls(n, pa.int64()),  # a historian import does not know the state events
            **_source_columns(self.appender.offsets(TELEMETRY_STREAM, n), source_ms),
        }
        self.appender.submit(TELEMETRY_STREAM, pa.Table.from_pydict(arrays, schema=bronze_schema(TELEMETRY_STREAM)))
        self.steps_done += k
        self.filled = 0


def write_history(
    settings: Settings,
    *,
    start_ms: int,
    hours: float,
    plant: PlantConfig | None = None,
    machines: int | None = None,
    sample_period_s: float | None = None,
    seed: int | None = None,
    ground_truth: Path | None = None,
    telemetry_rows_per_commit: int = TELEMETRY_ROWS_PER_COMMIT,
) -> HistoryResult:
    """Simulate ``hours`` of a plant from ``start_ms`` and append its four streams to bronze.

    The plant is ``plant``, else the settings' plant file (``PLANTSTREAM_PLANT_FILE``, empty =
    the shipped plant) scaled to ``machines`` machines with :func:`history_plant` when given.
    ``sample_period_s`` (default: the plant's) is the engine's step: one reading per machine
    and signal per step; state changes, cycles and energy readings fall on step times.
    ``ground_truth``: the engine's ground-truth log (JSONL) is written there.  Deterministic
    for the same plant, seed, start and length (and the same bronze contents before, which
    set where ``seq`` and offsets continue).
    """
    if hours <= 0:
        raise ValueError(f"hours must be > 0, got {hours}")
    if plant is None:
        plant = load_plant(settings.plant_file or None)
        if machines is not None:
            plant = history_plant(machines, base=plant, seed=seed)
    if sample_period_s is not None:
        plant = plant.model_copy(update={"sample_period_s": sample_period_s})
    log = GroundTruthLog(ground_truth) if ground_truth is not None else None
    started = time.perf_counter()
    period_ms = round(plant.sample_period_s * 1000)
    # The engine stamps a step with the time after it: starting one period early puts the
    # first step at ``start_ms`` and the last one period before the end (a day is one day).
    sim = _ArraySimulator(plant, start_ms - period_ms, log, plant.seed if seed is None else seed)
    appender = _BronzeAppender(settings)
    steps = round(hours * 3_600_000 / period_ms)
    telemetry = _TelemetryBuffer(sim, appender, telemetry_rows_per_commit)
    pending: dict[str, list[_Event]] = {
        EVENTS_STREAM.name: sim.initial_state_events(start_ms),
        QUALITY_STREAM.name: [],
        ENERGY_STREAM.name: [],
    }
    specs = {spec.name: spec for spec in (EVENTS_STREAM, QUALITY_STREAM, ENERGY_STREAM)}
    try:
        for step in range(steps):
            snapshot = sim.step()
            telemetry.add(snapshot.ts, sim.values)
            pending[EVENTS_STREAM.name] += snapshot.events
            pending[QUALITY_STREAM.name] += snapshot.parts
            pending[ENERGY_STREAM.name] += snapshot.energy
            if telemetry.filled == 0 or step == steps - 1:  # a telemetry chunk went out: the others follow
                _flush_events(pending, specs, appender)
        telemetry.flush()
        _flush_events(pending, specs, appender)
        appender.close()
    finally:
        if log is not None:
            log.close()
    total = time.perf_counter() - started
    return HistoryResult(
        plant=plant,
        start_ms=start_ms,
        end_ms=start_ms + steps * sim.period_ms,
        steps=steps,
        rows={spec: appender.rows.get(spec, 0) for spec in ("telemetry", "events", "quality", "energy")},
        commits=appender.commits,
        seconds={"total": round(total, 3), "bronze_writes": round(appender.write_s, 3)},
    )


def _flush_events(pending: dict[str, list[_Event]], specs: Mapping[str, StreamSpec], appender: _BronzeAppender) -> None:
    for name, events in pending.items():
        if events:
            appender.submit(specs[name], _events_table(specs[name], events, appender))
            events.clear()


__all__ = [
    "HISTORY_PARTITION",
    "HistoryResult",
    "history_app_id",
    "history_plant",
    "write_history",
    "write_plant_file",
]
