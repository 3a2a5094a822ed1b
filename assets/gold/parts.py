"""Quality Pareto and energy per good part of one day.

*Quality Pareto*: the day's scrapped and reworked parts by defect code, per machine, per
line and per site (``scope``), ranked by count; ``cumulative_share`` is the Pareto curve
(the codes up to this rank make that share of the scope's defects).  A defect without a
code counts as ``unknown``.

*Energy per good part*: each machine's cumulative meter (``energy_kwh``) gives the energy
between two consecutive readings; a window gets the part of that energy proportional to
the part of the interval between the readings that lies inside it (the meter is read
every minute, so a shift boundary falls between two readings).  A reading below the
previous one is a meter reset: that interval's energy is unknown and left out
(``meter_resets``); ``covered_s`` says how much of the window lies between readings.
Divided by the window's good parts (``QualityMetric`` with result ``good``).
"""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pyarrow as pa

from plantstream.assets.gold.calendar import MachineInfo, day_windows
from plantstream.assets.gold.inputs import DayInputs
from plantstream.contract.columns import TIMESTAMP_MS_UTC
from plantstream.simulator.plant_config import Shift

UNKNOWN_DEFECT = "unknown"

PARETO_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("scope", pa.string()),  # site | line | machine
        ("site", pa.string()),
        ("area", pa.string()),
        ("line", pa.string()),
        ("machine_id", pa.string()),
        ("defect_code", pa.string()),
        ("scrap_count", pa.int64()),
        ("rework_count", pa.int64()),
        ("defect_count", pa.int64()),
        ("rank", pa.int32()),
        ("share_of_defects", pa.float64()),
        ("cumulative_share", pa.float64()),
        ("parts_in_scope", pa.int64()),
        ("defect_rate", pa.float64()),  # defect_count / parts_in_scope
    ]
)

ENERGY_SCHEMA = pa.schema(
    [
        ("day", pa.date32()),
        ("scope", pa.string()),  # machine | line
        ("site", pa.string()),
        ("area", pa.string()),
        ("line", pa.string()),
        ("machine_id", pa.string()),
        ("machines", pa.int32()),
        ("shift", pa.string()),
        ("shift_start", TIMESTAMP_MS_UTC),
        ("window_start", TIMESTAMP_MS_UTC),
        ("window_end", TIMESTAMP_MS_UTC),
        ("energy_kwh", pa.float64()),
        ("covered_s", pa.float64()),
        ("meter_resets", pa.int64()),
        ("total_count", pa.int64()),
        ("good_count", pa.int64()),
        ("kwh_per_good_part", pa.float64()),
        ("kwh_per_part", pa.float64()),
    ]
)


def quality_pareto_rows(inputs: DayInputs) -> pa.Table:
    """Defects of the day by code, per machine, line and site, with Pareto rank and shares."""
    parts = inputs.parts
    if not parts.num_rows:
        return PARETO_SCHEMA.empty_table()
    columns = ("machine_id", "site", "area", "line", "result", "defect_code")
    # A scope: (scope, site, area, line, machine), the parts of a site, a line or a machine.
    defects: dict[tuple[str, str, str | None, str | None, str | None], dict[str, Counter[str]]] = {}
    parts_in: Counter[tuple[str, str, str | None, str | None, str | None]] = Counter()
    for machine, site, area, line, result, code in zip(*(parts[c].to_pylist() for c in columns), strict=True):
        for scope in (
            ("site", site, None, None, None),
            ("line", site, area, line, None),
            ("machine", site, area, line, machine),
        ):
            parts_in[scope] += 1
            if result in ("scrap", "rework"):
                counters = defects.setdefault(scope, {"scrap": Counter(), "rework": Counter()})
                counters[result][code or UNKNOWN_DEFECT] += 1
    rows = []
    for scope, counters in defects.items():
        both = counters["scrap"] + counters["rework"]
        total = sum(both.values())
        running = 0
        for rank, (code, count) in enumerate(sorted(both.items(), key=lambda item: (-item[1], item[0])), start=1):
            running += count
            rows.append(
                dict(
                    zip(("scope", "site", "area", "line", "machine_id"), scope, strict=True),
                    day=inputs.day,
                    defect_code=code,
                    scrap_count=counters["scrap"][code],
                    rework_count=counters["rework"][code],
                    defect_count=count,
                    rank=rank,
                    share_of_defects=count / total,
                    cumulative_share=running / total,
                    parts_in_scope=parts_in[scope],
                    defect_rate=count / parts_in[scope],
                )
            )
    table = pa.Table.from_pylist(rows, schema=PARETO_SCHEMA)
    order = {"site": 0, "line": 1, "machine": 2}
    keys = [order[s] for s in table["scope"].to_pylist()]
    table = table.append_column("_order", pa.array(keys, pa.int8()))
    keys = [("_order", "ascending"), ("line", "ascending"), ("machine_id", "ascending"), ("rank", "ascending")]
    return table.sort_by(keys).drop_columns(["_order"])


def prorated_energy(times: np.ndarray, meter: np.ndarray, start_ms: int, end_ms: int) -> tuple[float, float, int]:
    """Energy (kWh) of one machine inside ``[start_ms, end_ms)``, the seconds covered, resets.

    ``times`` sorted; each consecutive pair of readings contributes its energy times the
    share of its interval inside the window.
    """
    if len(times) < 2:
        return 0.0, 0.0, 0
    t0, t1 = times[:-1], times[1:]
    delta = meter[1:] - meter[:-1]
    span = (t1 - t0).astype(float)
    overlap = np.clip(np.minimum(t1, end_ms) - np.maximum(t0, start_ms), 0, None).astype(float)
    inside = overlap > 0
    reset = inside & (delta < 0)
    usable = inside & ~reset & (span > 0)
    energy = float(np.sum(delta[usable] * overlap[usable] / span[usable]))
    return energy, float(np.sum(overlap[usable]) / 1000), int(reset.sum())


def energy_rows(inputs: DayInputs, machines: dict[str, MachineInfo], shifts: list[Shift]) -> pa.Table:
    """Energy and energy per (good) part, per machine and line, for the day and each shift segment."""
    windows = day_windows(inputs.day, shifts)
    energy = inputs.energy
    ids = energy["machine_id"].to_numpy(zero_copy_only=False)
    times = energy["event_time"].to_numpy(zero_copy_only=False)
    meter = energy["energy_kwh"].to_numpy(zero_copy_only=False)
    parts = inputs.parts
    part_ids = parts["machine_id"].to_numpy(zero_copy_only=False)
    part_times = parts["event_time"].to_numpy(zero_copy_only=False)
    good = parts["result"].to_numpy(zero_copy_only=False) == "good" if parts.num_rows else np.array([], bool)
    readings, produced = _runs(ids), _runs(part_ids)
    rows = []
    lines: dict[tuple[tuple[str, str, str], str, int], list[dict[str, float]]] = {}
    for machine_id in sorted(readings.keys() | produced.keys()):
        info = machines.get(machine_id)
        fallback = (info.site, info.area, info.line) if info else ("", "", "")
        identity = inputs.identity.get(machine_id, fallback)
        r0, r1 = readings.get(machine_id, (0, 0))
        p0, p1 = produced.get(machine_id, (0, 0))
        my_times, my_good = part_times[p0:p1], good[p0:p1]
        for window in windows:
            kwh, covered, resets = prorated_energy(times[r0:r1], meter[r0:r1], window.start_ms, window.end_ms)
            lo, hi = np.searchsorted(my_times, [window.start_ms, window.end_ms], side="left")
            figures = {
                "energy_kwh": kwh,
                "covered_s": covered,
                "meter_resets": resets,
                "total_count": int(hi - lo),
                "good_count": int(my_good[lo:hi].sum()),
            }
            if not figures["covered_s"] and not figures["total_count"]:
                continue  # nothing known of this machine in this window
            rows.append(
                _energy_row(
                    inputs,
                    scope="machine",
                    identity=identity,
                    machine_id=machine_id,
                    window=window,
                    figures=figures,
                    machines=1,
                )
            )
            lines.setdefault((identity, window.shift, window.start_ms), []).append(figures)
    window_of = {(w.shift, w.start_ms): w for w in windows}
    for (identity, shift, start), members in lines.items():
        summed = {key: sum(m[key] for m in members) for key in members[0]}
        window = window_of[shift, start]
        rows.append(
            _energy_row(
                inputs,
                scope="line",
                identity=identity,
                machine_id=None,
                window=window,
                figures=summed,
                machines=len(members),
            )
        )
    if not rows:
        return ENERGY_SCHEMA.empty_table()
    table = pa.Table.from_pylist(rows, schema=ENERGY_SCHEMA)
    order = [("scope", "descending"), ("line", "ascending"), ("machine_id", "ascending")]
    return table.sort_by([*order, ("window_start", "ascending"), ("shift", "ascending")])


def _runs(sorted_ids: np.ndarray) -> dict[str, tuple[int, int]]:
    """Where each machine's rows start and end in a column sorted by machine."""
    if not len(sorted_ids):
        return {}
    bounds = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1], True])
    return {str(sorted_ids[a]): (int(a), int(b)) for a, b in itertools.pairwise(bounds)}


def _energy_row(
    inputs: DayInputs,
    *,
    scope: str,
    identity: tuple[str, str, str],
    machine_id: str | None,
    window,
    figures,
    machines: int,
) -> dict[str, object]:
    site, area, line = identity
    good, total = int(figures["good_count"]), int(figures["total_count"])
    return {
        "day": inputs.day,
        "scope": scope,
        "site": site,
        "area": area,
        "line": line,
        "machine_id": machine_id,
        "machines": machines,
        "shift": window.shift,
        "shift_start": window.shift_start_ms,
        "window_start": window.start_ms,
        "window_end": window.end_ms,
        "energy_kwh": figures["energy_kwh"],
        "covered_s": figures["covered_s"],
        "meter_resets": int(figures["meter_resets"]),
        "total_count": total,
        "good_count": good,
        "kwh_per_good_part": figures["energy_kwh"] / good if good else None,
        "kwh_per_part": figures["energy_kwh"] / total if total else None,
    }
