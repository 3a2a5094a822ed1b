"""The cold tier's automation as one domain of the code location: jobs, schedules, sensors.

Wiring only (what runs when); the work is in :mod:`plantstream.assets.cold` and the gold
assets.  ``gold_refresh`` is the one job that rebuilds gold days (a range in one run: the
gold assets' single-run backfill policy); it always follows a silver run that named
those days (the daily close, the bronze sensor, a silver backfill), chained by the
sensor ``gold_after_silver`` (:mod:`plantstream.orchestration.sensors` says why two runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from plantstream.assets.silver_days import day_key
from plantstream.contract.streams import STREAMS
from plantstream.orchestration.jobs import lakehouse_refresh
from plantstream.orchestration.schedules import gold_close_schedule, lake_maintenance, lake_maintenance_daily
from plantstream.orchestration.sensors import bronze_versions_sensor, gold_after_silver_sensor

if TYPE_CHECKING:  # the type is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

#: Gold and the warm tier's copies of it (which depend on gold directly, so a run orders them).
GOLD_GROUPS = ("gold", "warm")
SILVER_DAY_KEYS = [day_key(spec) for spec in STREAMS]


def gold_refresh_job(partitions: dg.PartitionsDefinition) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "gold_refresh",
        # The silver days' quality checks run first: blocking, a failed day skips the gold that reads it.
        selection=dg.AssetSelection.groups(*GOLD_GROUPS) | dg.AssetSelection.checks_for_assets(*SILVER_DAY_KEYS),
        partitions_def=partitions,
        description="The gold assets, and their warm-tier copies, for the run's days (one run for a range), after "
        "the quality checks of the silver days. Requested after the silver run that named those days (sensor "
        "gold_after_silver).",
        tags={"plantstream/kind": "gold"},
    )


def automation_defs(gold_partitions: dg.PartitionsDefinition | None) -> dg.Definitions:
    """Jobs, schedules and sensors; the gold parts only when there are gold assets (``gold_partitions``)."""
    jobs: list[UnresolvedAssetJobDefinition] = [lake_maintenance]
    schedules: list[dg.ScheduleDefinition] = [lake_maintenance_daily]
    sensors: list[dg.SensorDefinition] = [bronze_versions_sensor(lakehouse_refresh, gold_partitions)]
    if gold_partitions is not None:
        gold_job = gold_refresh_job(gold_partitions)
        jobs.append(gold_job)
        schedules.append(gold_close_schedule(lakehouse_refresh))
        sensors.append(gold_after_silver_sensor(lakehouse_refresh, gold_job))
    return dg.Definitions(jobs=jobs, schedules=schedules, sensors=sensors)


def defs() -> dg.Definitions:
    from plantstream.assets.gold.calendar import GOLD_PARTITIONS

    return automation_defs(GOLD_PARTITIONS)
