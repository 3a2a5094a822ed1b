"""Daily schedules: gold closed after the last shift, then the lake's maintenance.

* ``gold_daily_close`` (06:30 UTC) closes yesterday's gold: it requests a silver refresh
  that names yesterday as its gold day, and the gold run follows it (sensor
  ``gold_after_silver``; one run cannot order gold after silver, see
  :mod:`plantstream.orchestration.sensors`).  Why 06:30: the last shift that starts on a
  day is the night shift, 22:00-06:00 UTC (``simulator/plants/default.yaml``); it ends at
  06:00 the next morning, and the 30 minutes cover events the edge buffered and the
  stream's snapshot interval.  Gold's days are UTC days (the night shift's 22:00-24:00
  segment is in the day it starts, ``assets/gold/calendar.py``), so at 06:30 on D+1 the
  close of D sees every shift that started on D finished.
* ``lake_maintenance_daily`` (07:30 UTC, after the close): silver refreshed, then every
  asset of the ``maintenance`` group: compaction and Z-order of yesterday's partitions,
  checkpoints, vacuum, and the verified hot -> cold archival (which compares with the
  silver it just refreshed).

Both are on by default (``DefaultScheduleStatus.RUNNING``): the platform's Dagster runs
the daemon, and the schedules tick without anyone switching them on.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from plantstream.contract.streams import STREAMS

if TYPE_CHECKING:  # the type is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

SILVER = dg.AssetSelection.assets(*(dg.AssetKey(["silver", spec.name]) for spec in STREAMS))
MAINTENANCE = dg.AssetSelection.groups("maintenance")
CLOSE_HOUR, CLOSE_MINUTE = 6, 30
MAINTENANCE_CRON = "30 7 * * *"

lake_maintenance = dg.define_asset_job(
    "lake_maintenance",
    selection=SILVER | MAINTENANCE,
    description="Silver refreshed, then the maintenance group: Delta compaction, Z-order, checkpoints, vacuum, "
    "and the verified hot -> cold archival.",
    tags={"plantstream/kind": "maintenance"},
)

lake_maintenance_daily = dg.ScheduleDefinition(
    name="lake_maintenance_daily",
    job=lake_maintenance,
    cron_schedule=MAINTENANCE_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 07:30 UTC, after the gold close.",
)


def gold_close_schedule(silver_job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """Every day at 06:30 UTC: silver refreshed, naming yesterday as the gold day to close."""
    from plantstream.orchestration.sensors import GOLD_END_TAG, GOLD_START_TAG

    @dg.schedule(
        name="gold_daily_close",
        job=silver_job,
        cron_schedule=f"{CLOSE_MINUTE} {CLOSE_HOUR} * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Closes yesterday's gold after the night shift (22:00-06:00 UTC) and 30 minutes of lateness: "
        "silver first, then gold for the day (sensor gold_after_silver).",
    )
    def _close(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        closed = (context.scheduled_execution_time.astimezone(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
        return dg.RunRequest(
            run_key=f"gold-close-{closed}",
            tags={GOLD_START_TAG: closed, GOLD_END_TAG: closed, "plantstream/close": closed},
        )

    return _close
