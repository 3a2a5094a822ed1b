"""A clean simulated week passes every check; a drifted day of features blocks its labels.

One lake of a simulated plant (4 machines, one reading a minute) for eight days, through
the real pipeline on one Dagster instance: bronze, then (for the eighth day only) a
recalibrated air-temperature sensor on every machine (+6 K: still inside the signal's
valid range, so no silver check can see it), silver, then per day the production job
``gold_refresh`` (silver checks, gold, gold checks, warm) and a run of the failure
model's features and labels with the features' checks.  Real S3 (SeaweedFS), real Great
Expectations, real Dagster.

* Monday to Sunday: no check fails, warnings included (no false alarms), every gold,
  warm, feature and label day is written.
* The eighth day: ``feature_drift`` fails on the air-temperature features, the run does
  not materialise ``gold/failure_labels`` of that day and the table has no such day.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow as pa
import pytest
from corruptions import sensor_offset
from lakehouse_data import SILVER, Lake, build_lake

from plantstream.assets.gold.assets import GOLD_TABLES
from plantstream.assets.gold.calendar import GOLD_PARTITIONS
from plantstream.assets.gold.tables import read_gold_days
from plantstream.assets.predictive_maintenance.assets import FEATURES_KEY, GROUND_TRUTH_KEY, LABELS_KEY
from plantstream.assets.predictive_maintenance.features import FEATURES_TABLE, LABELS_TABLE
from plantstream.quality_checks.suites import SUITES

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]
MON = dt.date(2026, 1, 5)
MACHINES = 4
WEEK = [MON + dt.timedelta(days=n) for n in range(7)]
DRIFTED = MON + dt.timedelta(days=7)

FEATURE_RUN = dg.define_asset_job(
    "features_with_checks",
    selection=dg.AssetSelection.assets(FEATURES_KEY, LABELS_KEY),  # and the checks of both
    partitions_def=GOLD_PARTITIONS,
)


class Week:
    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self.defs = dg.Definitions.merge(lake.defs, dg.Definitions(jobs=[FEATURE_RUN]))
        self.evaluations: dict[str, list[dg.AssetCheckEvaluation]] = {}
        self.written: dict[str, set[str]] = {}

    def run(self, job: str, day: dt.date) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def(job).execute_in_process(
            instance=self.lake.instance, partition_key=day.isoformat(), raise_on_error=False
        )
        self.evaluations.setdefault(day.isoformat(), []).extend(result.get_asset_check_evaluations())
        self.written.setdefault(day.isoformat(), set()).update(
            e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
        )
        return result


@pytest.fixture(scope="module")
def week(platform_settings, tmp_path_factory) -> Week:
    folder = tmp_path_factory.mktemp("clean-week")
    base = platform_settings.model_copy(
        update={
            "lake": platform_settings.lake.model_copy(update={"prefix": f"test/quality-{folder.name}"}),
            "state_dir": folder / "state",
            "warm": platform_settings.warm.model_copy(update={"duckdb_path": str(folder / "warm.duckdb")}),
            "models": platform_settings.models.model_copy(update={"ground_truth_dir": str(folder)}),
        }
    )
    lake = build_lake(base, folder, machines=MACHINES, days=8, sample_period_s=60.0, gold=False, silver=False)
    sensor_offset(lake.settings, "air_temperature", DRIFTED, 6.0)
    lake.materialize(SILVER)
    lake.materialize(dg.AssetSelection.assets(GROUND_TRUTH_KEY))
    week = Week(lake)
    for day in [*WEEK, DRIFTED]:
        week.run("gold_refresh", day)
        week.run("features_with_checks", day)
    return week


def _days(lake: Lake, table: str) -> set[dt.date]:
    rows = read_gold_days(lake.defs.resources["lake"], table, WEEK[0], DRIFTED, columns=["day"])
    return set(rows["day"].to_pylist()) if rows.num_rows else set()


def test_a_clean_week_passes_every_check(week: Week) -> None:
    partitioned = {f"{s.asset_key.to_user_string()}:{c.name}" for s in SUITES if s.partitioned for c in s.checks}
    for day in WEEK:
        evaluations = week.evaluations[day.isoformat()]
        seen = {f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations}
        assert partitioned <= seen, partitioned - seen  # every partitioned check ran on the day
        alarms = {f"{e.asset_key.to_user_string()}:{e.check_name}": e.description for e in evaluations if not e.passed}
        assert not alarms, (day, alarms)
    for table in [*GOLD_TABLES, FEATURES_TABLE, LABELS_TABLE]:
        assert set(WEEK) <= _days(week.lake, table), table
    for day in WEEK:
        assert {f"warm/{t}" for t in GOLD_TABLES} <= week.written[day.isoformat()]


def test_the_clean_week_checks_judged_data(week: Week) -> None:
    # No false alarm must not mean "nothing was looked at": the drift check compared real samples.
    sunday = {e.check_name: e for e in week.evaluations[WEEK[-1].isoformat()] if e.asset_key == FEATURES_KEY}
    assert sunday["feature_drift"].metadata["rows_checked"].value > 0
    telemetry = [e for e in week.evaluations[WEEK[2].isoformat()] if e.asset_key.path[-1] == "telemetry_by_day"]
    rows = {e.check_name: e.metadata["rows_checked"].value for e in telemetry}["signal_ranges"]
    assert rows >= MACHINES * 24 * 60  # every machine's readings of the day, one a minute at least


def test_feature_drift_fails_and_keeps_the_labels_from_being_written(week: Week) -> None:
    evaluations = week.evaluations[DRIFTED.isoformat()]
    failed = {f"{e.asset_key.to_user_string()}:{e.check_name}" for e in evaluations if not e.passed}
    assert failed == {"gold/failure_features:feature_drift"}, failed  # the silver checks cannot see it
    drift = next(e for e in evaluations if e.check_name == "feature_drift")
    assert drift.severity == dg.AssetCheckSeverity.ERROR
    drifting = {row["feature"] for row in drift.metadata["failing_rows"].value}
    assert drifting and all(name.startswith(("air_temp", "temp_margin")) for name in drifting), drifting
    assert "gold/failure_labels" not in week.written[DRIFTED.isoformat()]
    assert DRIFTED not in _days(week.lake, LABELS_TABLE)
    assert DRIFTED in _days(week.lake, FEATURES_TABLE)  # the checked asset itself is written (Dagster's semantics)


def test_the_offset_is_inside_the_signal_range(week: Week) -> None:
    # The premise of the drift test: silver of the drifted day really holds the shifted values.
    table = week.lake.defs.resources["lake"].table("silver", "telemetry")
    rows = table.to_pyarrow_dataset().to_table(
        columns=["value"],
        filter=(pa.compute.field("signal") == "air_temperature")
        & (pa.compute.field("event_date") == pa.scalar(DRIFTED, pa.date32())),
    )
    values = rows["value"].to_pylist()
    assert values and 300 < sum(values) / len(values) < 350
