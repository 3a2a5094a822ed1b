"""Backfill jobs: silver rebuilt from bronze for a date range, the hot store re-hydrated from the lake.

Both are op jobs with the range in their run config (Launchpad: ``start`` and ``end``,
ISO dates, both included) rather than partitioned assets: silver is one incremental,
unpartitioned asset (``silver/<stream>``), and a rebuilt range is a repair of it, not a
second asset writing the same table.  Each op records what it did on the asset it
rewrote: an ``AssetMaterialization`` of ``silver/<stream>`` (rows and content checksum per
day) and an ``AssetObservation`` of ``hotstore/<stream>_raw``.

Gold for the same range is rebuilt by the gold assets themselves, in one run over the
range (their backfill policy): when ``backfill_silver_from_bronze`` succeeds, the sensor
``gold_after_silver_backfill`` (:mod:`plantstream.orchestration.sensors`) requests it.
"""

# No `from __future__ import annotations`: Dagster inspects the annotations at runtime.
import datetime as dt

import dagster as dg
from pydantic import Field

from plantstream.assets.cold.backfill import rebuild_silver, rehydrate_hot
from plantstream.contract.streams import STREAMS, stream_named
from plantstream.orchestration.resources import HotStore, Lake
from plantstream.orchestration.retries import TRANSIENT_RETRY, retry_if_transient

STREAM_NAMES = [spec.name for spec in STREAMS]
BACKFILL_JOB = "backfill_silver_from_bronze"
REHYDRATE_JOB = "rehydrate_hot_store"


class DateRange(dg.Config):
    """Days ``start`` .. ``end`` (ISO dates, UTC, both included) of the chosen streams."""

    start: str = Field(description="first day, YYYY-MM-DD (UTC)")
    end: str = Field(description="last day, YYYY-MM-DD (UTC), included")
    streams: list[str] = Field(default_factory=lambda: list(STREAM_NAMES), description="streams to rebuild")

    def days(self) -> tuple[dt.date, dt.date]:
        try:
            start, end = dt.date.fromisoformat(self.start), dt.date.fromisoformat(self.end)
        except ValueError as exc:
            raise dg.Failure(f"start/end must be ISO dates (YYYY-MM-DD): {exc}", allow_retries=False) from None
        if end < start:
            raise dg.Failure(f"the range ends ({end}) before it starts ({start})", allow_retries=False)
        unknown = sorted(set(self.streams) - set(STREAM_NAMES))
        if unknown:
            raise dg.Failure(f"unknown streams {unknown}; streams: {STREAM_NAMES}", allow_retries=False)
        return start, end


@dg.op(retry_policy=TRANSIENT_RETRY, description="Rebuild each day of the range of silver from bronze.")
def rebuild_silver_days(context: dg.OpExecutionContext, config: DateRange, lake: dg.ResourceParam[Lake]) -> None:
    start, end = config.days()
    for name in config.streams:
        with retry_if_transient(f"rebuilding silver/{name} from bronze"):
            days = rebuild_silver(lake, stream_named(name), start, end)
        context.log.info(f"silver/{name}: rebuilt {len(days)} day(s) from {start} to {end}")
        context.log_event(
            dg.AssetMaterialization(
                asset_key=["silver", name],
                description=f"days {start} .. {end} rebuilt from bronze",
                metadata={
                    "rebuilt_from": start.isoformat(),
                    "rebuilt_to": end.isoformat(),
                    "silver_rows_written": sum(d.silver_rows for d in days),
                    "bronze_rows_read": sum(d.bronze_rows for d in days),
                    "conflicting_duplicates": sum(d.conflicting_duplicates for d in days),
                    "seconds": round(sum(d.seconds for d in days), 3),
                    "days": dg.MetadataValue.json([d.as_dict() for d in days]),
                    "dagster/uri": lake.table_uri("silver", name),
                },
            )
        )


@dg.job(
    name=BACKFILL_JOB,
    description="Rebuild a date range of silver from bronze (run config: start, end, streams); the gold assets "
    "of the range follow in one run (sensor gold_after_silver_backfill). Twice gives identical tables.",
    tags={"plantstream/kind": "backfill"},
)
def backfill_silver_from_bronze() -> None:
    rebuild_silver_days()


@dg.op(retry_policy=TRANSIENT_RETRY, description="Insert each day of the range from bronze into <stream>_raw.")
def rehydrate_days(
    context: dg.OpExecutionContext,
    config: DateRange,
    lake: dg.ResourceParam[Lake],
    hotstore: dg.ResourceParam[HotStore],
) -> None:
    start, end = config.days()
    for name in config.streams:
        spec = stream_named(name)
        with retry_if_transient(f"re-hydrating {spec.hot_table}"):
            days = rehydrate_hot(hotstore, lake, spec, start, end)
        skipped = [d for d in days if d.skipped]
        for day in skipped:
            context.log.warning(f"{spec.hot_table} {day.day} not re-hydrated: {day.skipped}")
        context.log_event(
            dg.AssetObservation(
                asset_key=["hotstore", spec.hot_table],
                description=f"days {start} .. {end} re-hydrated from bronze",
                metadata={
                    "rehydrated_from": start.isoformat(),
                    "rehydrated_to": end.isoformat(),
                    "rows_inserted": sum(d.bronze_rows for d in days),
                    "days_skipped": len(skipped),
                    "days": dg.MetadataValue.json([d.as_dict() for d in days]),
                },
            )
        )


@dg.job(
    name=REHYDRATE_JOB,
    description="Re-hydrate the hot store's <stream>_raw tables for a date range from bronze (after a hot-store "
    "loss); days beyond the tables' TTL are skipped and reported. Repeating it adds nothing.",
    tags={"plantstream/kind": "backfill"},
)
def rehydrate_hot_store() -> None:
    rehydrate_days()


COLD_JOBS = [backfill_silver_from_bronze, rehydrate_hot_store]
