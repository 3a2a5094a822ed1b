"""Sensors: new bronze versions -> silver, and a finished silver run -> the gold days it names.

Gold has to run *after* silver, and a single run holding both cannot promise that: gold
depends on ``silver/<stream>_by_day`` (external assets silver's run reports), not on
``silver/<stream>`` itself, and Dagster orders the steps of a run only along direct
dependencies between the assets it runs.  So every path to gold is two runs, chained:

1. a ``lakehouse_refresh`` run (silver brought up to date) carrying the gold days to
   rebuild in its tags (:data:`GOLD_START_TAG`, :data:`GOLD_END_TAG`), or a
   ``backfill_silver_from_bronze`` run (its date range is in its run config);
2. ``gold_after_silver``: when such a run succeeds, one ``gold_refresh`` run over those
   days (the range tags of a single-run backfill: the gold assets run the range as one
   step), with the silver run's id as run key, so it is requested once.

``bronze_versions`` looks at the Delta version of every stream's bronze table each
minute.  When one moved past what its cursor (stream -> version acted on) says, it
requests one ``lakehouse_refresh`` run; the run key is the set of versions it covers, so
a tick evaluated twice (a daemon restart) cannot launch a second run for the same data,
and a new version without new data (a compaction) only moves the cursor.  The days that
received data are read from the commits in between
(:func:`plantstream.assets.cold.delta_log.partitions_changed`); a late event in a *closed*
day (before today, UTC, and at most 31 days back) names that day's gold and its closed
neighbours (a gold day reads silver of the day before and after: ``assets/gold/inputs.py``)
for the chained gold run.
Today's data names no gold day: today's gold is provisional, and yesterday's is closed by
the daily schedule.

Both sensors are on by default (``DefaultSensorStatus.RUNNING``): with the platform's
Dagster (``plantstream platform up --with-dagster``, which runs the daemon) they run
without anyone switching them on.
"""

# No `from __future__ import annotations`: Dagster inspects the annotations at runtime.
import datetime as dt
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

from plantstream.assets.cold.delta_log import partitions_changed
from plantstream.assets.cold.jobs import backfill_silver_from_bronze
from plantstream.contract.streams import STREAMS
from plantstream.orchestration.resources import Lake

if TYPE_CHECKING:  # the type is not exported by dagster
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
GOLD_START_TAG = "plantstream/gold_days_start"
GOLD_END_TAG = "plantstream/gold_days_end"
SENSOR_INTERVAL_S = 60
#: A gold day reads silver of the day before and the day after (assets/gold/inputs.py).
GOLD_READS_DAYS_AROUND = 1
#: The sensor's gold catch-up reaches this far back; older days are left to a backfill.
GOLD_CATCH_UP_DAYS = 31


@dataclass(frozen=True)
class BronzeChanges:
    versions: dict[str, int]  # stream -> current bronze version (only tables that exist)
    moved: dict[str, int]  # streams whose version moved past the cursor
    days: set[str]  # event_date partitions with new data since the cursor


def bronze_changes(lake: Lake, cursor: dict[str, int]) -> BronzeChanges:
    """Bronze versions now, and what changed since ``cursor`` (a stream missing from it: everything)."""
    versions, moved, days = {}, {}, set()
    for spec in STREAMS:
        table = lake.table("bronze", spec.name)
        if table is None:
            continue
        version = table.version()
        versions[spec.name] = version
        last = cursor.get(spec.name, -1)
        if version != last:  # lower: the table was replaced (a wiped lake): all of it is new
            moved[spec.name] = version
            since = last if version > last else -1
            days |= partitions_changed(table, since, "event_date", storage_options=lake.storage_options)
    return BronzeChanges(versions, moved, days)


def run_key(versions: dict[str, int]) -> str:
    return "bronze:" + ",".join(f"{name}={version}" for name, version in sorted(versions.items()))


def closed_gold_days(
    days: set[str], partitions: dg.PartitionsDefinition, today: dt.date, *, back: int = GOLD_CATCH_UP_DAYS
) -> list[str]:
    """The closed gold days that late data in ``days`` can change: each closed day that got data,
    and its neighbours, before today.

    Data of today names nothing, although it is the "day after" of yesterday's gold: the
    stream writes today's data all day, and yesterday's gold is closed (with today's first
    events in view) by the daily close; rebuilding it every minute would change nothing.
    Days more than ``back`` days ago are left out too: new data that old (a historian
    import, a sensor's first look at a lake with years in it) is a backfill decision.
    """
    affected = set()
    oldest = today - dt.timedelta(days=back)
    for key in days:
        day = dt.date.fromisoformat(key)
        if day >= today or day < oldest:
            continue
        for offset in range(-GOLD_READS_DAYS_AROUND, GOLD_READS_DAYS_AROUND + 1):
            affected.add(day + dt.timedelta(days=offset))
    return sorted(d.isoformat() for d in affected if d < today and partitions.has_partition_key(d.isoformat()))


def bronze_versions_sensor(
    silver_job: "UnresolvedAssetJobDefinition", gold_partitions: dg.PartitionsDefinition | None = None
) -> dg.SensorDefinition:
    """The sensor; ``gold_partitions``: name the changed closed gold days for the chained gold run."""

    @dg.sensor(
        name="bronze_versions",
        job=silver_job,
        minimum_interval_seconds=SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="New bronze Delta versions -> one run bringing silver up to date; closed gold days that got "
        "late data follow (sensor gold_after_silver).",
    )
    def _sensor(context: dg.SensorEvaluationContext, lake: dg.ResourceParam[Lake]) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        changes = bronze_changes(lake, cursor)
        new_cursor = json.dumps({**cursor, **changes.versions}, sort_keys=True)
        if not changes.moved:
            return dg.SensorResult(skip_reason=dg.SkipReason("no new bronze version"), cursor=new_cursor)
        if not changes.days:  # e.g. a compaction: a new version, no new data
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"bronze moved ({changes.moved}) without new data"), cursor=new_cursor
            )
        tags = {"plantstream/bronze_versions": json.dumps(changes.moved, sort_keys=True)}
        today = dt.datetime.now(dt.UTC).date()
        gold = closed_gold_days(changes.days, gold_partitions, today) if gold_partitions is not None else []
        if gold:
            tags |= {GOLD_START_TAG: gold[0], GOLD_END_TAG: gold[-1]}
        older = sorted(d for d in changes.days if d < (today - dt.timedelta(days=GOLD_CATCH_UP_DAYS)).isoformat())
        if gold_partitions is not None and older:
            context.log.warning(
                f"new bronze data for {len(older)} day(s) older than {GOLD_CATCH_UP_DAYS} days ({older[0]} .. "
                f"{older[-1]}): their gold is left to a backfill (job backfill_silver_from_bronze)"
            )
        context.log.info(f"bronze moved: {changes.moved}; days with new data: {sorted(changes.days)}; gold: {gold}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=run_key(changes.versions), tags=tags)], cursor=new_cursor
        )

    return _sensor


def gold_range_of(run: dg.DagsterRun) -> tuple[str, str] | None:
    """The gold days a finished silver run names: its tags, or a backfill's run config."""
    if GOLD_START_TAG in run.tags and GOLD_END_TAG in run.tags:
        return run.tags[GOLD_START_TAG], run.tags[GOLD_END_TAG]
    config = run.run_config.get("ops", {}).get("rebuild_silver_days", {}).get("config", {})
    if config.get("start") and config.get("end"):
        return config["start"], config["end"]
    return None


def gold_after_silver_sensor(
    silver_job: "UnresolvedAssetJobDefinition", gold_job: "UnresolvedAssetJobDefinition"
) -> dg.RunStatusSensorDefinition:
    """When a silver run that names gold days succeeds: those days of gold, in one run."""

    @dg.run_status_sensor(
        name="gold_after_silver",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[silver_job, backfill_silver_from_bronze],
        request_job=gold_job,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="A silver refresh or backfill that names gold days succeeded -> those gold days, in one run.",
    )
    def _sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
        days = gold_range_of(context.dagster_run)
        if days is None:
            return dg.SkipReason("the silver run names no gold days")
        return dg.RunRequest(
            run_key=f"gold-after-{context.dagster_run.run_id}",
            tags={RANGE_START: days[0], RANGE_END: days[1], "plantstream/after_run": context.dagster_run.run_id},
        )

    return _sensor
