"""Jobs and schedules that tie the domains together."""

from __future__ import annotations

import dagster as dg

lakehouse_refresh = dg.define_asset_job(
    "lakehouse_refresh",
    selection=dg.AssetSelection.groups("lakehouse").materializable(),
    description="Bring silver up to date with what the stream wrote to bronze.",
)

observe_stream_outputs = dg.define_asset_job(
    "observe_stream_outputs",
    selection=dg.AssetSelection.groups("hot_store", "lakehouse")
    - dg.AssetSelection.groups("lakehouse").materializable(),
    description="Record row counts and versions of what the stream wrote.",
)


def defs() -> dg.Definitions:
    return dg.Definitions(
        jobs=[lakehouse_refresh, observe_stream_outputs],
        schedules=[
            dg.ScheduleDefinition(
                job=lakehouse_refresh, cron_schedule="*/15 * * * *", default_status=dg.DefaultScheduleStatus.STOPPED
            ),
            dg.ScheduleDefinition(
                job=observe_stream_outputs, cron_schedule="*/5 * * * *", default_status=dg.DefaultScheduleStatus.STOPPED
            ),
        ],
    )
