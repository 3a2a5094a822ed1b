"""What one gold day reads from silver, and nothing more.

Every gold table of day ``D`` is a function of silver rows of a few days around it:

* state events of ``D - 1 .. D + 1`` (the state at ``D``'s start is that of the last state
  event before it; the state at ``D``'s end lasts until the next one), looking further back
  only for machines whose last state change is older than ``D - 1``;
* quality and energy rows of ``D - 1 .. D + 1`` (parts of ``D``; the meter reading before and
  after ``D``; how long a machine is known to have been there);
* telemetry of ``D`` only.

These ranges are also the gold assets' partition mappings onto the silver days
(``assets/silver_days.py``), so a late row lands in exactly the gold days it can change.
Reads go through ``DeltaTable.to_pyarrow_dataset()`` with the day range as a partition
filter and only the columns needed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from plantstream.contract.events import MachineEventType
from plantstream.orchestration.resources import Lake

#: The events that put a machine into a state.  ``MaintenanceEnded`` and ``FaultRaised`` are
#: always followed, at the same time, by one of these (``domain/machine_state.py``), and
#: ``CycleCompleted`` is no state change (its ``state`` is where the machine was left after
#: the cycle, without the reason).
STATE_ENTRY_EVENTS: tuple[str, ...] = (
    MachineEventType.MACHINE_STARTED.value,
    MachineEventType.MACHINE_STOPPED.value,
    MachineEventType.MAINTENANCE_STARTED.value,
)
LOOKBACK_DAYS = (7, 31, 365)
"""How far back, in widening steps, the state at a day's start is looked for."""
STATE_COLUMNS = ["machine_id", "seq", "event_time", "event_type", "state", "reason"]


def day_filter(first: dt.date, last: dt.date) -> pads.Expression:
    field = pc.field("event_date")
    return (field >= pa.scalar(first, pa.date32())) & (field <= pa.scalar(last, pa.date32()))


def silver_rows(
    lake: Lake,
    stream: str,
    first: dt.date,
    last: dt.date,
    columns: list[str],
    *,
    where: pads.Expression | None = None,
    keep: Mapping[str, Sequence[str]] | None = None,
) -> pa.Table:
    """Rows of ``silver/<stream>`` with ``first <= event_date <= last`` (an empty table if none).

    ``where`` (numbers and times only) goes into the scan; ``keep`` (column -> the string
    values to keep) is applied to the rows in memory: a lake written by an older
    PlantStream (a delta-rs merge) may hold files with ``string_view`` columns, on which
    pyarrow cannot evaluate a string filter.
    """
    table = lake.table("silver", stream)
    if table is None:
        raise LookupError(f"silver/{stream} does not exist yet: materialise silver first")
    condition = day_filter(first, last) if where is None else day_filter(first, last) & where
    names = list(dict.fromkeys([*columns, *(keep or {})]))
    rows = table.to_pyarrow_dataset().to_table(columns=names, filter=condition)
    for column, values in (keep or {}).items():
        rows = rows.filter(pc.is_in(rows[column].cast(pa.string()), value_set=pa.array(list(values), pa.string())))
    return rows.select(columns)


def epoch_ms(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class DayInputs:
    """Silver rows around one day, as plain columns (times in epoch ms)."""

    day: dt.date
    state_events: pa.Table  # STATE_COLUMNS, event_time as int64 ms, sorted by machine, time, seq
    parts: pa.Table  # machine_id, event_time (ms), result, defect_code, site, area, line: parts of the day
    energy: pa.Table  # machine_id, event_time (ms), energy_kwh: readings of day - 1 .. day + 1
    horizon_ms: dict[str, int]  # per machine: its latest event (any stream but telemetry) up to day + 1
    identity: dict[str, tuple[str, str, str]]  # machine -> (site, area, line) as the data says


def _as_ms(table: pa.Table) -> pa.Table:
    index = table.schema.get_field_index("event_time")
    return table.set_column(index, "event_time", pa.array(epoch_ms(table["event_time"])))


def _state_events(lake: Lake, day: dt.date, machines_seen: set[str]) -> pa.Table:
    rows = silver_rows(
        lake, "events", day - dt.timedelta(days=1), day + dt.timedelta(days=1), STATE_COLUMNS,
        keep={"event_type": list(STATE_ENTRY_EVENTS)},
    )  # fmt: skip
    rows = _as_ms(rows)
    start_ms = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    known = set(pc.unique(rows.filter(pc.less_equal(rows["event_time"], start_ms))["machine_id"]).to_pylist())
    missing = sorted((machines_seen | set(pc.unique(rows["machine_id"]).to_pylist())) - known)
    earlier = [rows]
    for back in LOOKBACK_DAYS:
        if not missing:
            break
        first = day - dt.timedelta(days=back)
        found = silver_rows(
            lake,
            "events",
            first,
            day - dt.timedelta(days=2),
            STATE_COLUMNS,
            keep={"event_type": list(STATE_ENTRY_EVENTS), "machine_id": list(missing)},
        )
        if found.num_rows:
            found = _as_ms(found).sort_by(
                [("machine_id", "ascending"), ("event_time", "ascending"), ("seq", "ascending")]
            )
            last = _last_per_machine(found)
            earlier.append(last)
            missing = sorted(set(missing) - set(last["machine_id"].to_pylist()))
    table = pa.concat_tables(earlier).combine_chunks()
    return table.sort_by([("machine_id", "ascending"), ("event_time", "ascending"), ("seq", "ascending")])


def _last_per_machine(sorted_rows: pa.Table) -> pa.Table:
    machines = sorted_rows["machine_id"].to_numpy(zero_copy_only=False)
    last = np.ones(len(machines), dtype=bool)
    last[:-1] = machines[1:] != machines[:-1]
    return sorted_rows.filter(pa.array(last))


def read_day_parts(lake: Lake, day: dt.date) -> DayInputs:
    """Only the day's parts (what the quality Pareto needs); the other fields are empty."""
    columns = ["machine_id", "event_time", "result", "defect_code", "site", "area", "line"]
    parts = _as_ms(silver_rows(lake, "quality", day, day, columns))
    parts = parts.sort_by([("machine_id", "ascending"), ("event_time", "ascending")])
    empty = pa.table({"machine_id": pa.array([], pa.string())})
    return DayInputs(day, empty, parts, empty, {}, {})


def read_day_inputs(lake: Lake, day: dt.date) -> DayInputs:
    """Everything the state-based gold tables of ``day`` need (not telemetry)."""
    before, after = day - dt.timedelta(days=1), day + dt.timedelta(days=1)
    identity_cols = ["site", "area", "line"]
    quality = _as_ms(
        silver_rows(
            lake, "quality", before, after, ["machine_id", "event_time", "result", "defect_code", *identity_cols]
        )
    )
    energy = _as_ms(
        silver_rows(lake, "energy", before, after, ["machine_id", "event_time", "energy_kwh", *identity_cols])
    )
    events = _as_ms(silver_rows(lake, "events", before, after, ["machine_id", "event_time", *identity_cols]))
    start_ms = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)
    end_ms = start_ms + 86_400_000
    horizon: dict[str, int] = {}
    identity: dict[str, tuple[str, str, str]] = {}
    seen: set[str] = set()
    for rows in (events, quality, energy):
        if not rows.num_rows:
            continue
        grouped = rows.group_by("machine_id").aggregate([("event_time", "max")])
        for machine, latest in zip(
            grouped["machine_id"].to_pylist(), grouped["event_time_max"].to_pylist(), strict=True
        ):
            horizon[machine] = max(horizon.get(machine, latest), latest)
        in_day = rows.filter(
            pc.and_(pc.greater_equal(rows["event_time"], start_ms), pc.less(rows["event_time"], end_ms))
        )
        seen |= set(pc.unique(in_day["machine_id"]).to_pylist())
        ids = rows.group_by(["machine_id", *identity_cols]).aggregate([])
        for machine, site, area, line in zip(
            *(ids[c].to_pylist() for c in ["machine_id", *identity_cols]), strict=True
        ):
            identity.setdefault(machine, (site, area, line))
    in_day_parts = pc.and_(pc.greater_equal(quality["event_time"], start_ms), pc.less(quality["event_time"], end_ms))
    parts = quality.filter(in_day_parts).sort_by([("machine_id", "ascending"), ("event_time", "ascending")])
    energy = energy.select(["machine_id", "event_time", "energy_kwh"])
    energy = energy.sort_by([("machine_id", "ascending"), ("event_time", "ascending")])
    return DayInputs(day, _state_events(lake, day, seen), parts, energy, horizon, identity)
