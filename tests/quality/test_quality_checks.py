"""The data-quality checks on a simulated plant: corrupted days fail the right check and block their gold.

One lake of a simulated plant (8 machines, Monday to Friday, one reading a minute) goes
through the real pipeline: history into bronze, corruptions into bronze the way a plant
would send them (one kind per day), silver, then the production jobs in process on one
instance: ``silver_quality`` for every day (the checks alone), then ``gold_refresh`` per
day (the silver days' checks again, gold, gold's checks, warm).  Real S3 (SeaweedFS),
real Great Expectations, real Dagster: nothing is mocked.

======  ==================================================================  ========================
day     corruption                                                          what must not be written
======  ==================================================================  ========================
Mon     a same-seq re-send of a burst (at-least-once: bronze warns only)    nothing (silver dedups)
Tue     torque x1000 after a PLC update (cnc-mill-001 from 08:00)           gold rollups of Tue
Wed     vibration frozen 10:00-12:00 (press-002); quality rows without      rollups of Wed; pareto of
        machine id (robot-cell-007)                                         Wed; OEE/downtime/energy
                                                                            of Tue-Thu
Thu     a burst replayed under new seq numbers (robot-cell-003)             rollups of Thu
Fri     no rows at all from cnc-mill-005 in the late shift                  rollups of Fri, OEE/...
                                                                            of Thu-Fri
======  ==================================================================  ========================

Then the plant file gets a wrong ideal cycle time: Monday's OEE is above 1, its check fails
and warm/oee is not published.  The clean week (``test_clean_week``) is a second lake.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from corruptions import duplicated_burst, lost_machine_id, missing_shift, stuck_sensor, unit_change
from lakehouse_data import SILVER, Lake, build_lake

from plantstream.assets.gold.assets import GOLD_TABLES
from plantstream.assets.gold.tables import read_gold_days

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]
MON = dt.date(2026, 1, 5)
DAYS = [MON + dt.timedelta(days=n) for n in range(5)]
TUE, WED, THU, FRI = DAYS[1:]
STATE_ASSETS = ("oee", "downtime", "mtbf_mttr", "energy_per_part")
ROLLUPS = ("telemetry_hourly", "telemetry_daily")


class Runs:
    """The lake and what each day's runs reported."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.checks: dict[str, dict[str, dg.AssetCheckEvaluation]] = {}  # day -> "asset:check" -> evaluation
        self.written: dict[str, set[str]] = {}  # day -> asset keys materialised by gold_refresh
        self.seconds: dict[str, float] = {}

    def run(self, job: str, day: dt.date) -> dg.ExecuteInProcessResult:
        started = time.perf_counter()
        # A tag, not partition_key=: a job of checks alone has no assets to take a partitions definition from.
        result = self.lake.defs.resolve_job_def(job).execute_in_process(
            instance=self.lake.instance, tags={"dagster/partition": day.isoformat()}, raise_on_error=False
        )
        self.seconds[f"{job} {day}"] = time.perf_counter() - started
        found = self.checks.setdefault(day.isoformat(), {})
        for evaluation in result.get_asset_check_evaluations():
            found[f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"] = evaluation
        written = self.written.setdefault(day.isoformat(), set())
        written |= {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        return result

    def failed(self, day: dt.date) -> set[str]:
        return {name for name, e in self.checks[day.isoformat()].items() if not e.passed}


def _corrupt(lake: Lake) -> None:
    settings = lake.settings
    duplicated_burst(settings, "conveyor-004", MON, 9, 9.5, new_seq=False)
    unit_change(settings, "cnc-mill-001", "torque", TUE, 8, 1000)
    stuck_sensor(settings, "press-002", "vibration", WED, 10, 12)
    lost_machine_id(settings, "quality", "robot-cell-007", WED, 8, 9)
    duplicated_burst(settings, "robot-cell-003", THU, 10, 10 + 1 / 6, new_seq=True)
    missing_shift(settings, "cnc-mill-005", FRI, 14, 22)


@pytest.fixture(scope="module")
def runs(platform_settings, tmp_path_factory) -> Runs:
    folder = tmp_path_factory.mktemp("quality")
    base = platform_settings.model_copy(
        update={
            "lake": platform_settings.lake.model_copy(update={"prefix": f"test/quality-{folder.name}"}),
            "state_dir": folder / "state",
            "warm": platform_settings.warm.model_copy(update={"duckdb_path": str(folder / "warm.duckdb")}),
        }
    )
    lake = build_lake(base, folder, machines=8, days=len(DAYS), sample_period_s=60.0, gold=False, silver=False)
    # The hourly bronze checks saw the clean history; the next evaluation judges the days changed since.
    baseline = lake.defs.resolve_job_def("bronze_quality").execute_in_process(instance=lake.instance)
    assert baseline.success and all(e.passed for e in baseline.get_asset_check_evaluations())
    _corrupt(lake)
    lake.materialize(SILVER)
    runs = Runs(lake)
    for day in DAYS:  # the checks of every day first: gold of a day reads its neighbours too
        runs.run("silver_quality", day)
    for day in DAYS:
        runs.run("gold_refresh", day)
    return runs


def _gold_days(runs: Runs, table: str) -> set[dt.date]:
    rows = read_gold_days(runs.lake.defs.resources["lake"], table, DAYS[0], DAYS[-1], columns=["day"])
    return set(rows["day"].to_pylist()) if rows.num_rows else set()


def test_monday_passes_every_blocking_check_and_bronze_warns_of_the_resend(runs: Runs) -> None:
    failed = runs.failed(MON)
    assert not {f for f in failed if f.startswith(("silver/", "gold/"))}, failed
    for table in GOLD_TABLES:
        assert f"gold/{table}" in runs.written[MON.isoformat()]
        assert f"warm/{table}" in runs.written[MON.isoformat()]
    # The same-seq re-send is in bronze (at-least-once) and nowhere after it.
    bronze = runs.lake.defs.resolve_job_def("bronze_quality").execute_in_process(instance=runs.lake.instance)
    evaluations = {e.check_name: e for e in bronze.get_asset_check_evaluations() if e.asset_key.path[1] == "telemetry"}
    assert not evaluations["unique_key"].passed
    assert evaluations["unique_key"].severity == dg.AssetCheckSeverity.WARN
    assert MON.isoformat() in evaluations["unique_key"].metadata["failed_days"].value
    assert bronze.success  # a warning fails no run


def test_a_unit_change_fails_signal_ranges_and_blocks_the_rollups(runs: Runs) -> None:
    assert runs.failed(TUE) == {"silver/telemetry_by_day:signal_ranges"}
    evaluation = runs.checks[TUE.isoformat()]["silver/telemetry_by_day:signal_ranges"]
    assert "torque" in evaluation.metadata["failed_expectation"].value
    rows = evaluation.metadata["failing_rows"].value
    assert rows and all(r["machine_id"] == "cnc-mill-001" and r["signal"] == "torque" for r in rows)
    assert min(r["value"] for r in rows) > 500  # the range's top, Nm
    assert evaluation.metadata["data_docs"].value.startswith("file://")
    for rollup in ROLLUPS:
        assert TUE not in _gold_days(runs, rollup)
        assert f"gold/{rollup}" not in runs.written[TUE.isoformat()]


def test_a_stuck_sensor_and_a_null_machine_id_fail_their_checks(runs: Runs) -> None:
    assert runs.failed(WED) >= {"silver/telemetry_by_day:stuck_sensor", "silver/quality_by_day:not_null"}
    stuck = runs.checks[WED.isoformat()]["silver/telemetry_by_day:stuck_sensor"].metadata["failing_rows"].value
    assert [(r["machine_id"], r["signal"]) for r in stuck] == [("press-002", "vibration")]
    assert WED not in _gold_days(runs, "telemetry_daily")
    assert WED not in _gold_days(runs, "quality_pareto")
    # OEE, downtime and energy of a day read the quality of the day before and after.
    for table in STATE_ASSETS:
        assert not {TUE, WED, THU} & _gold_days(runs, table), table


def test_a_burst_replayed_under_new_seqs_fails_time_order_and_unique_key(runs: Runs) -> None:
    failed = runs.failed(THU)
    assert {"silver/telemetry_by_day:time_order", "silver/telemetry_by_day:unique_key"} <= failed
    order = runs.checks[THU.isoformat()]["silver/telemetry_by_day:time_order"].metadata["failing_rows"].value
    assert [r["machine_id"] for r in order] == ["robot-cell-003"]
    assert THU not in _gold_days(runs, "telemetry_hourly")


def test_a_missing_shift_fails_shift_coverage(runs: Runs) -> None:
    failed = runs.failed(FRI)
    assert {"silver/telemetry_by_day:shift_coverage", "silver/energy_by_day:shift_coverage"} <= failed
    rows = runs.checks[FRI.isoformat()]["silver/telemetry_by_day:shift_coverage"].metadata["failing_rows"].value
    assert [(r["machine_id"], r["shift"], r["rows"]) for r in rows] == [("cnc-mill-005", "late", 0)]
    assert FRI not in _gold_days(runs, "telemetry_daily")
    assert not {THU, FRI} & _gold_days(runs, "oee")


def test_the_gate_refuses_a_gold_day_materialised_without_its_checks(runs: Runs) -> None:
    # Tuesday's telemetry failed: a run of the rollups alone (no checks in it) must still not write.
    selection = dg.AssetSelection.assets(*(["gold", r] for r in ROLLUPS))
    job = dg.define_asset_job(
        "rollups_alone",
        selection=selection,
        partitions_def=runs.lake.defs.resolve_job_def("gold_refresh").partitions_def,
    )
    defs = dg.Definitions.merge(runs.lake.defs, dg.Definitions(jobs=[job]))
    result = defs.resolve_job_def("rollups_alone").execute_in_process(
        instance=runs.lake.instance, partition_key=TUE.isoformat(), raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "silver/telemetry_by_day [2026-01-06] check `signal_ranges` failed" in str(failure.step_failure_data.error)
    assert TUE not in _gold_days(runs, "telemetry_daily")


def test_a_wrong_ideal_cycle_time_fails_performance_and_blocks_warm_oee(runs: Runs) -> None:
    lake = runs.lake
    plant_file = Path(lake.settings.plant_file)
    plant = yaml.safe_load(plant_file.read_text())
    plant["machine_types"]["cnc_mill"]["cycle_s"] *= 10  # 30 s typed as 300 s
    plant_file.write_text(yaml.safe_dump(plant))
    warm_before = lake.instance.get_latest_materialization_event(dg.AssetKey(["warm", "oee"]))
    result = runs.run("gold_refresh", MON)
    failed = {
        f"{e.asset_key.to_user_string()}:{e.check_name}" for e in result.get_asset_check_evaluations() if not e.passed
    }
    assert "gold/oee:performance_at_most_one" in failed
    assert not {f for f in failed if f.startswith("silver/")}
    evaluation = next(
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "performance_at_most_one" and e.asset_key.path[1] == "oee"
    )
    sample = evaluation.metadata["failing_rows"].value
    assert sample and all(r["performance"] > 1 for r in sample if "performance" in r)
    warm_after = lake.instance.get_latest_materialization_event(dg.AssetKey(["warm", "oee"]))
    assert (warm_after.run_id, warm_after.timestamp) == (warm_before.run_id, warm_before.timestamp)  # not published
    assert "warm/energy_per_part" in {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
