"""OEE, downtime, MTBF and MTTR of one day, from the machines' state events.

A machine's state is the state of its latest state event (``domain/machine_state.py``); an
interval runs from one state event to the next.  The last interval of a machine has no
next event yet: it lasts until the machine's latest event of any stream (events, parts,
energy readings) up to the end of the next day - as long as the state is *known* to last,
never to the end of a window in the future (docs/oee.md).  Time before a machine's first
state event is in no interval (``unknown_s``).

OEE is :func:`plantstream.domain.oee.oee` per machine and window (the day, each shift
segment), :func:`~plantstream.domain.oee.combine` per line: nothing of the definition is
repeated here.  The ideal cycle time is the machine type's ``cycle_s`` of the plant file.

Downtime events are the day's non-running state intervals (those that *start* in the day,
with their full duration, also when they end tomorrow).  A failure is a stop whose reason
starts with ``failure:``; MTTR is the mean duration of the day's failures that ended, MTBF
the machine's run time in the day divided by its failures (undefined without failures).
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from plantstream.assets.gold.calendar import DAY_WINDOW, MachineInfo, Window, day_start_ms, day_windows, shift_at
from plantstream.assets.gold.inputs import DayInputs
from plantstream.contract.columns import TIMESTAMP_MS_UTC
from plantstream.domain.oee import OeeResult, StateInterval, classify_stop, combine, durations_in_window, oee
from plantstream.simulator.plant_config import Shift

FAILURE_PREFIX = "failure:"
_LOSSES = pa.map_(pa.string(), pa.float64())

OEE_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("scope", pa.string()),  # machine | line
        ("site", pa.string()),
        ("area", pa.string()),
        ("line", pa.string()),
        ("machine_id", pa.string()),  # null for a line
        ("machine_type", pa.string()),
        ("machines", pa.int32()),
        ("shift", pa.string()),  # a shift's name, or "day"
        ("shift_start", TIMESTAMP_MS_UTC),
        ("window_start", TIMESTAMP_MS_UTC),
        ("window_end", TIMESTAMP_MS_UTC),
        ("availability", pa.float64()),
        ("performance", pa.float64()),
        ("quality", pa.float64()),
        ("oee", pa.float64()),
        ("period_s", pa.float64()),
        ("planned_production_s", pa.float64()),
        ("run_s", pa.float64()),
        ("planned_stop_s", pa.float64()),
        ("unplanned_stop_s", pa.float64()),
        ("net_run_s", pa.float64()),
        ("fully_productive_s", pa.float64()),
        ("performance_loss_s", pa.float64()),
        ("quality_loss_s", pa.float64()),
        ("unknown_s", pa.float64()),
        ("total_count", pa.int64()),
        ("good_count", pa.int64()),
        ("scrap_count", pa.int64()),
        ("ideal_cycle_s", pa.float64()),
        ("nothing_planned", pa.bool_()),
        ("performance_above_one", pa.bool_()),
        ("availability_loss_s", _LOSSES),
        ("planned_stop_by_reason_s", _LOSSES),
        ("warnings", pa.string()),
    ]
)

DOWNTIME_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("site", pa.string()),
        ("area", pa.string()),
        ("line", pa.string()),
        ("machine_id", pa.string()),
        ("start", TIMESTAMP_MS_UTC),
        ("end", TIMESTAMP_MS_UTC),
        ("duration_s", pa.float64()),
        ("state", pa.string()),
        ("reason", pa.string()),  # "" when the stop has none
        ("stop_class", pa.string()),  # planned_stop | unplanned_stop
        ("is_failure", pa.bool_()),
        ("shift", pa.string()),  # the shift the stop started in ("" outside every shift)
        ("open", pa.bool_()),  # no state event ended it yet: it lasts at least until `end`
    ]
)

RELIABILITY_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("site", pa.string()),
        ("area", pa.string()),
        ("line", pa.string()),
        ("machine_id", pa.string()),
        ("run_s", pa.float64()),
        ("failures", pa.int64()),
        ("repairs_ended", pa.int64()),
        ("repair_s", pa.float64()),
        ("mttr_s", pa.float64()),
        ("mtbf_s", pa.float64()),
        ("failure_reasons", pa.map_(pa.string(), pa.int64())),
    ]
)


@dataclass(frozen=True, slots=True)
class Interval:
    state: str
    reason: str
    start_ms: int
    end_ms: int
    open: bool


def machine_intervals(inputs: DayInputs) -> dict[str, list[Interval]]:
    """Per machine: its state intervals around the day (see the module docstring)."""
    events = inputs.state_events
    machines = events["machine_id"].to_pylist()
    times = events["event_time"].to_pylist()
    states = events["state"].to_pylist()
    reasons = events["reason"].to_pylist()
    out: dict[str, list[Interval]] = {}
    n = len(machines)
    for i in range(n):
        machine = machines[i]
        last = i + 1 == n or machines[i + 1] != machine
        start = times[i]
        end = max(inputs.horizon_ms.get(machine, start), start) if last else times[i + 1]
        out.setdefault(machine, []).append(Interval(states[i], reasons[i] or "", start, end, last))
    return out


def _part_counts(inputs: DayInputs) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per machine: part times (sorted) and whether each part is good."""
    parts = inputs.parts
    machines = parts["machine_id"].to_numpy(zero_copy_only=False)
    times = parts["event_time"].to_numpy(zero_copy_only=False)
    good = (parts["result"].to_numpy(zero_copy_only=False) == "good") if parts.num_rows else np.array([], bool)
    out = {}
    if not parts.num_rows:
        return out
    bounds = np.flatnonzero(np.r_[True, machines[1:] != machines[:-1], True])
    for a, b in itertools.pairwise(bounds):
        out[str(machines[a])] = (times[a:b], good[a:b])
    return out


def _count_in(counts: tuple[np.ndarray, np.ndarray] | None, window: Window) -> tuple[int, int]:
    if counts is None:
        return 0, 0
    times, good = counts
    lo, hi = np.searchsorted(times, [window.start_ms, window.end_ms], side="left")
    return int(hi - lo), int(good[lo:hi].sum())


def _day_machines(inputs: DayInputs, intervals: dict[str, list[Interval]], start_ms: int, end_ms: int) -> list[str]:
    """Machines the day knows anything about: a state interval overlapping it, or a part in it."""
    present = {m for m, ivs in intervals.items() if any(iv.end_ms > start_ms and iv.start_ms < end_ms for iv in ivs)}
    present |= set(inputs.parts["machine_id"].to_pylist())
    return sorted(present)


@dataclass(frozen=True)
class OeeDay:
    rows: pa.Table
    unknown_machines: list[str]  # in silver but not in the plant file: no ideal cycle time, left out
    results: dict[tuple[str, str, int], OeeResult]  # (machine, shift, window start) -> result


def _row(
    day: dt.date, scope: str, identity: tuple[str, str, str], machine: MachineInfo | None, window: Window, *,
    result: OeeResult, machines: int, window_total_s: float,
) -> dict[str, object]:  # fmt: skip
    site, area, line = identity
    values = result.as_dict()
    return {
        "day": day,
        "scope": scope,
        "site": site,
        "area": area,
        "line": line,
        "machine_id": machine.machine_id if machine else None,
        "machine_type": machine.machine_type if machine else None,
        "machines": machines,
        "shift": window.shift,
        "shift_start": window.shift_start_ms,
        "window_start": window.start_ms,
        "window_end": window.end_ms,
        **{name: values[name] for name in OEE_SCHEMA.names if name in values and name != "warnings"},
        "availability_loss_s": sorted(result.availability_loss_s.items()),
        "planned_stop_by_reason_s": sorted(result.planned_stop_by_reason_s.items()),
        "unknown_s": max(window_total_s - result.period_s, 0.0),
        "warnings": "; ".join(result.warnings),
    }


def oee_rows(inputs: DayInputs, machines: dict[str, MachineInfo], shifts: list[Shift]) -> OeeDay:
    """Gold OEE of one day: per machine and line, for the day and each shift segment."""
    day = inputs.day
    windows = day_windows(day, shifts)
    start_ms = day_start_ms(day)
    intervals = machine_intervals(inputs)
    counts = _part_counts(inputs)
    rows: list[dict[str, object]] = []
    results: dict[tuple[str, str, int], OeeResult] = {}
    unknown = []
    by_line: dict[tuple[tuple[str, str, str], int, str], list[OeeResult]] = {}
    for machine_id in _day_machines(inputs, intervals, start_ms, start_ms + 86_400_000):
        info = machines.get(machine_id)
        if info is None:
            unknown.append(machine_id)
            continue
        identity = inputs.identity.get(machine_id, (info.site, info.area, info.line))
        spans = [StateInterval(iv.state, iv.reason, iv.start_ms, iv.end_ms) for iv in intervals.get(machine_id, [])]
        for window in windows:
            durations = durations_in_window(spans, window.start_ms, window.end_ms)
            total, good = _count_in(counts.get(machine_id), window)
            result = oee(durations, ideal_cycle_s=info.ideal_cycle_s, total_count=total, good_count=good)
            results[machine_id, window.shift, window.start_ms] = result
            length = (window.end_ms - window.start_ms) / 1000
            rows.append(_row(day, "machine", identity, info, window, result=result, machines=1, window_total_s=length))
            by_line.setdefault((identity, window.start_ms, window.shift), []).append(result)
    window_of = {(w.start_ms, w.shift): w for w in windows}
    for (identity, window_start, shift), members in by_line.items():
        window = window_of[window_start, shift]
        length = (window.end_ms - window.start_ms) / 1000 * len(members)
        line = combine(members)
        rows.append(
            _row(day, "line", identity, None, window, result=line, machines=len(members), window_total_s=length)
        )
    table = pa.Table.from_pylist(rows, schema=OEE_SCHEMA) if rows else OEE_SCHEMA.empty_table()
    order = [("scope", "descending"), ("line", "ascending"), ("machine_id", "ascending")]
    return OeeDay(table.sort_by([*order, ("window_start", "ascending"), ("shift", "ascending")]), unknown, results)


def downtime_rows(inputs: DayInputs, machines: dict[str, MachineInfo], shifts: list[Shift]) -> pa.Table:
    """The day's stops: every non-running state interval that starts in the day."""
    day = inputs.day
    start_ms = day_start_ms(day)
    end_ms = start_ms + 86_400_000
    windows = day_windows(day, shifts)
    rows = []
    for machine_id, intervals in sorted(machine_intervals(inputs).items()):
        info = machines.get(machine_id)
        fallback = (info.site, info.area, info.line) if info else ("", "", "")
        site, area, line = inputs.identity.get(machine_id, fallback)
        for iv in intervals:
            if iv.state == "running" or not start_ms <= iv.start_ms < end_ms or iv.end_ms <= iv.start_ms:
                continue
            rows.append(
                {
                    "day": day,
                    "site": site,
                    "area": area,
                    "line": line,
                    "machine_id": machine_id,
                    "start": iv.start_ms,
                    "end": iv.end_ms,
                    "duration_s": (iv.end_ms - iv.start_ms) / 1000,
                    "state": iv.state,
                    "reason": iv.reason,
                    "stop_class": classify_stop(iv.state, iv.reason),
                    "is_failure": iv.reason.startswith(FAILURE_PREFIX),
                    "shift": shift_at(windows, iv.start_ms),
                    "open": iv.open,
                }
            )
    return pa.Table.from_pylist(rows, schema=DOWNTIME_SCHEMA) if rows else DOWNTIME_SCHEMA.empty_table()


def reliability_rows(oee_day: OeeDay, downtime: pa.Table, inputs: DayInputs) -> pa.Table:
    """MTBF and MTTR per machine of the day (machines with an OEE row)."""
    start_ms = day_start_ms(inputs.day)
    failures: dict[str, list[tuple[float, bool, str]]] = {}
    for machine, duration, is_failure, is_open, reason in zip(
        *(downtime[c].to_pylist() for c in ("machine_id", "duration_s", "is_failure", "open", "reason")), strict=True
    ):
        if is_failure:
            failures.setdefault(machine, []).append((duration, is_open, reason))
    rows = []
    oee_table = oee_day.rows
    for scope, shift, machine, site, area, line in zip(
        *(oee_table[c].to_pylist() for c in ("scope", "shift", "machine_id", "site", "area", "line")), strict=True
    ):
        if scope != "machine" or shift != DAY_WINDOW:
            continue
        result = oee_day.results.get((machine, DAY_WINDOW, start_ms))
        if result is None:
            continue
        mine = failures.get(machine, [])
        ended = [d for d, is_open, _ in mine if not is_open]
        reasons: dict[str, int] = {}
        for _, _, reason in mine:
            reasons[reason] = reasons.get(reason, 0) + 1
        rows.append(
            {
                "day": inputs.day,
                "site": site,
                "area": area,
                "line": line,
                "machine_id": machine,
                "run_s": result.run_s,
                "failures": len(mine),
                "repairs_ended": len(ended),
                "repair_s": float(sum(ended)),
                "mttr_s": sum(ended) / len(ended) if ended else None,
                "mtbf_s": result.run_s / len(mine) if mine else None,
                "failure_reasons": sorted(reasons.items()),
            }
        )
    if not rows:
        return RELIABILITY_SCHEMA.empty_table()
    # A machine has one day row, so the OEE table's order (line, machine) is kept.
    return pa.Table.from_pylist(rows, schema=RELIABILITY_SCHEMA)
