"""Gold's calendar, its pure computations on a hand-written day, and how the assets are wired."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow as pa
import pytest

from plantstream.assets.gold.calendar import GOLD_PARTITIONS, MachineInfo, day_start_ms, day_windows, shift_at
from plantstream.assets.gold.inputs import DayInputs
from plantstream.assets.gold.parts import energy_rows, prorated_energy, quality_pareto_rows
from plantstream.assets.gold.states import downtime_rows, oee_rows, reliability_rows
from plantstream.orchestration.definitions import build_definitions
from plantstream.settings import load_settings
from plantstream.simulator.plant_config import Shift

DAY = dt.date(2026, 1, 6)
D0 = day_start_ms(DAY)
H = 3_600_000
SHIFTS = [Shift(name="early", start="06:00", end="14:00"), Shift(name="late", start="14:00", end="22:00"),
          Shift(name="night", start="22:00", end="06:00")]  # fmt: skip


def test_a_day_is_the_whole_day_and_each_shift_segment_in_it() -> None:
    windows = [
        (w.shift, (w.shift_start_ms - D0) / H, (w.start_ms - D0) / H, (w.end_ms - D0) / H)
        for w in day_windows(DAY, SHIFTS)
    ]
    assert windows == [
        ("day", 0, 0, 24),
        ("night", -2, 0, 6),  # the night shift that started yesterday at 22:00
        ("early", 6, 6, 14),
        ("late", 14, 14, 22),
        ("night", 22, 22, 24),
    ]
    assert [(w.shift, w.start_ms, w.end_ms) for w in day_windows(DAY, [])] == [("day", D0, D0 + 24 * H)]
    around = day_windows(DAY, [Shift(name="all", start="06:00", end="06:00")])
    assert [(w.shift, (w.start_ms - D0) / H, (w.end_ms - D0) / H) for w in around][1:] == [
        ("all", 0, 6),
        ("all", 6, 24),
    ]
    assert shift_at(day_windows(DAY, SHIFTS), D0 + 23 * H) == "night"
    assert GOLD_PARTITIONS.timezone == "UTC" and GOLD_PARTITIONS.has_partition_key("2026-01-06")


def _events(rows: list[tuple[str, float, str, str | None]]) -> pa.Table:
    """(machine, hours since the day's start, state, reason) as sorted state events."""
    return pa.table(
        {
            "machine_id": [r[0] for r in rows],
            "seq": list(range(len(rows))),
            "event_time": [int(D0 + r[1] * H) for r in rows],
            "event_type": ["MachineStarted" if r[2] == "running" else "MachineStopped" for r in rows],
            "state": [r[2] for r in rows],
            "reason": [r[3] for r in rows],
        }
    )


def _parts(machine: str, hours: list[float], results: list[str]) -> pa.Table:
    n = len(hours)
    return pa.table(
        {
            "machine_id": [machine] * n,
            "event_time": [int(D0 + h * H) for h in hours],
            "result": results,
            "defect_code": [None if r == "good" else "TWF" for r in results],
            "site": ["plant-1"] * n,
            "area": ["machining"] * n,
            "line": ["line-1"] * n,
        }
    )


@pytest.fixture
def day() -> DayInputs:
    # m1: running since yesterday 20:00; fails 08:00-08:30 (repair), cleaning 10:00-10:30; a failure at
    # 23:00 still open at the end of the data (tomorrow 00:15 is the last that is known of it).
    events = _events(
        [
            ("m1", -4, "running", None),
            ("m1", 8, "stopped", "failure:TWF"),
            ("m1", 8.5, "running", None),
            ("m1", 10, "maintenance", "planned:cleaning"),
            ("m1", 10.5, "running", None),
            ("m1", 23, "stopped", "failure:HDF"),
        ]
    )
    parts = _parts("m1", [1, 2, 9, 12], ["good", "good", "scrap", "good"])
    energy = pa.table(
        {
            "machine_id": ["m1"] * 3,
            "event_time": [D0 - H, D0 + 12 * H, D0 + 25 * H],
            "energy_kwh": [100.0, 137.0, 150.0],
        }
    )
    return DayInputs(
        DAY, events, parts, energy, {"m1": D0 + 24 * H + 15 * 60_000}, {"m1": ("plant-1", "machining", "line-1")}
    )


MACHINES = {"m1": MachineInfo("m1", "plant-1", "machining", "line-1", "cnc_mill", 60.0)}


def test_oee_downtime_and_mtbf_of_a_hand_written_day(day: DayInputs) -> None:
    result = oee_rows(day, MACHINES, SHIFTS)
    rows = {(r["scope"], r["shift"], r["window_start"].hour): r for r in result.rows.to_pylist()}
    whole = rows["machine", "day", 0]
    # 24 h: 0.5 h cleaning (planned), failures 0.5 h + 1 h (23:00-24:00), the rest running.
    assert whole["planned_stop_s"] == 1800 and whole["unplanned_stop_s"] == 5400 and whole["run_s"] == 24 * 3600 - 7200
    assert whole["availability"] == pytest.approx(whole["run_s"] / (whole["run_s"] + 5400))
    assert whole["performance"] == pytest.approx(60 * 4 / whole["run_s"]) and whole["quality"] == 0.75
    assert dict(whole["availability_loss_s"]) == {"failure:TWF": 1800.0, "failure:HDF": 3600.0}
    assert (rows["machine", "early", 6]["total_count"], rows["machine", "night", 0]["good_count"]) == (2, 2)
    assert rows["line", "day", 0]["oee"] == pytest.approx(whole["oee"])  # a line of one machine
    stops = downtime_rows(day, MACHINES, SHIFTS).to_pylist()
    assert [(s["reason"], s["duration_s"], s["stop_class"], s["is_failure"], s["open"], s["shift"]) for s in stops] == [
        ("failure:TWF", 1800.0, "unplanned_stop", True, False, "early"),
        ("planned:cleaning", 1800.0, "planned_stop", False, False, "early"),
        ("failure:HDF", 4500.0, "unplanned_stop", True, True, "night"),  # open: lasts at least until 00:15
    ]
    (kpi,) = reliability_rows(result, downtime_rows(day, MACHINES, SHIFTS), day).to_pylist()
    assert (kpi["failures"], kpi["repairs_ended"], kpi["mttr_s"]) == (2, 1, 1800.0)
    assert kpi["mtbf_s"] == whole["run_s"] / 2


def test_energy_is_shared_out_by_time_and_resets_are_left_out(day: DayInputs) -> None:
    rows = {(r["scope"], r["shift"], r["window_start"].hour): r for r in energy_rows(day, MACHINES, SHIFTS).to_pylist()}
    # 37 kWh over 13 h (12 of them today) + 13 kWh over 13 h (12 today)
    assert rows["machine", "day", 0]["energy_kwh"] == pytest.approx(37 * 12 / 13 + 13 * 12 / 13)
    assert rows["machine", "day", 0]["kwh_per_good_part"] == pytest.approx(rows["machine", "day", 0]["energy_kwh"] / 3)
    times = pa.array([0, 10, 20]).to_numpy()
    assert prorated_energy(times, pa.array([5.0, 1.0, 3.0]).to_numpy(), 0, 20) == (2.0, 0.01, 1)


def test_quality_pareto_ranks_defects_per_scope(day: DayInputs) -> None:
    rows = quality_pareto_rows(day).to_pylist()
    assert [
        (r["scope"], r["defect_code"], r["defect_count"], r["cumulative_share"], r["parts_in_scope"]) for r in rows
    ] == [
        ("site", "TWF", 1, 1.0, 4),
        ("line", "TWF", 1, 1.0, 4),
        ("machine", "TWF", 1, 1.0, 4),
    ]


def test_gold_days_depend_on_the_silver_days_they_read(tmp_path) -> None:
    graph = build_definitions(load_settings(state_dir=tmp_path)).resolve_asset_graph()
    oee = graph.get(dg.AssetKey(["gold", "oee"]))
    assert oee.group_name == "gold" and oee.partitions_def == GOLD_PARTITIONS
    assert oee.parent_keys == {dg.AssetKey(["silver", f"{s}_by_day"]) for s in ("events", "quality", "energy")}
    upstream = graph.get_parent_partition_keys_for_child(
        "2026-01-06", dg.AssetKey(["silver", "events_by_day"]), oee.key
    )
    assert sorted(upstream.partitions_subset.get_partition_keys()) == ["2026-01-05", "2026-01-06", "2026-01-07"]
    daily = graph.get(dg.AssetKey(["gold", "telemetry_daily"]))
    assert daily.parent_keys == {dg.AssetKey(["silver", "telemetry_by_day"])}
    for stream in ("telemetry", "events", "quality", "energy"):
        assert graph.get(dg.AssetKey(["silver", f"{stream}_by_day"])).parent_keys == {dg.AssetKey(["silver", stream])}
    for table in (
        "oee",
        "downtime",
        "mtbf_mttr",
        "quality_pareto",
        "energy_per_part",
        "telemetry_hourly",
        "telemetry_daily",
    ):
        warm = graph.get(dg.AssetKey(["warm", table]))
        assert warm.group_name == "warm" and warm.parent_keys == {dg.AssetKey(["gold", table])}
        assert warm.owners and warm.description and "partitioned_by" in graph.get(dg.AssetKey(["gold", table])).metadata
