"""Verified hot -> cold archival: a hot-store partition is dropped only once the lake holds its rows.

The hot tables ``<stream>_raw`` are partitioned by day (``toDate(event_ts)``).  A day
older than ``hotstore.hot_retention_days`` (before ``today - retention``, so every
event of it is older than the retention) is *archived*:

1. its partition is moved, as a whole, into a staging table of the same shape without
   a TTL (``ALTER TABLE … MOVE PARTITION ID … TO TABLE <table>__archiving_<run>``).  From
   then on the rows being verified are exactly the rows that will be dropped: a late
   event the stream writes into that day meanwhile lands in the live table, not here,
   and is verified by the next run (without the move, such a row inserted between the
   check and the ``DROP PARTITION`` would be dropped unverified);
2. the staged rows are verified against the silver table of the stream, day for day:
   row count and key checksum (:mod:`plantstream.assets.cold.checksums`: the sum of
   ``MD5(machine_id:seq)`` as UInt64, computed by ClickHouse on the hot side and by
   DuckDB on the lake side, ``FINAL`` on the hot side because a replayed event is one
   event);
3. equal: the staged partition is dropped.  Not equal (silver is missing rows, holds
   rows the hot store never had, or there is no silver table yet): the partition is
   moved back and **kept**, and the run reports it (``partitions_kept`` > 0, one log
   warning per partition with both sides' figures, and the asset check fails with
   severity WARN).

A run that dies between 1 and 3 leaves a staging table behind; the next run moves its
partitions back before it does anything else, so nothing is ever lost, only retried.

**The TTL and the order of things.**  The raw hot tables also carry a TTL:
ClickHouse deletes expired rows at insert and in background merges, verified or not.
With the TTL equal to the retention, a day would become an archival candidate exactly
when its rows expire, and a TTL merge could delete some or all of them before (or while)
archival looks: the verification would fail, the partition be reported as kept, and the
TTL delete it anyway.  So the TTL is a backstop *beyond* the retention
(``hot_retention_days + RAW_TTL_MARGIN_DAYS``, 7, in ``streaming/hot_tables.py``; an
existing table gets it by ``MODIFY TTL`` on the next start): archival drops verified
days at the retention, and an unverified day stays visible and reported for the margin
before the backstop removes it.  Each run reads the tables' actual TTL (``ttl_days`` in
the report) and warns when it leaves no margin.  For the same reason a
re-hydration can only restore days inside the TTL: older rows would vanish at insert.

The window table (``telemetry_windows``) has no lake counterpart to verify against;
it is left to its TTL.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.dataset as pads

from plantstream.assets.cold.checksums import EMPTY, KeyChecksum, hot_key_checksums, lake_key_checksum
from plantstream.contract.streams import STREAMS, StreamSpec
from plantstream.orchestration.resources import HotStore, Lake

log = logging.getLogger(__name__)

STAGING_MARKER = "__archiving_"
_TTL_DAYS = re.compile(r"TTL\s+.*?toIntervalDay\((\d+)\)", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class PartitionVerdict:
    """One hot partition's verification against the lake, and what was done with it."""

    stream: str
    day: str
    partition_id: str
    hot: KeyChecksum
    lake: KeyChecksum
    dropped: bool
    reason: str
    seconds: float

    @property
    def verified(self) -> bool:
        return self.dropped or self.reason == "verified (dry run)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "day": self.day,
            "hot_rows": self.hot.rows,
            "lake_rows": self.lake.rows,
            "hot_checksum": str(self.hot.checksum),
            "lake_checksum": str(self.lake.checksum),
            "dropped": self.dropped,
            "reason": self.reason,
            "seconds": self.seconds,
        }


@dataclass
class ArchivalReport:
    cutoff: str  # days before this one were candidates
    verdicts: list[PartitionVerdict] = field(default_factory=list)
    ttl_days: dict[str, int | None] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)  # staging tables of an earlier run, moved back

    @property
    def dropped(self) -> list[PartitionVerdict]:
        return [v for v in self.verdicts if v.dropped]

    @property
    def kept(self) -> list[PartitionVerdict]:
        return [v for v in self.verdicts if not v.verified]

    def figures(self) -> dict[str, Any]:
        seconds = [v.seconds for v in self.verdicts]
        return {
            "cutoff": self.cutoff,
            "partitions_checked": len(self.verdicts),
            "partitions_dropped": len(self.dropped),
            "partitions_kept": len(self.kept),
            "rows_dropped": sum(v.hot.rows for v in self.dropped),
            "verify_seconds_max": max(seconds, default=0.0),
            "verify_seconds_mean": round(sum(seconds) / len(seconds), 3) if seconds else 0.0,
            "ttl_days": self.ttl_days,
            "recovered_staging_tables": self.recovered,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.figures(), "verdicts": [v.as_dict() for v in self.verdicts]}


def archival_cutoff(today: dt.date, retention_days: int) -> dt.date:
    """Days *before* this date are older than the retention in every event they hold."""
    return today - dt.timedelta(days=retention_days)


def ttl_days(engine_full: str) -> int | None:
    """The TTL of a table in days, from ``system.tables.engine_full`` (None: no TTL)."""
    found = _TTL_DAYS.search(engine_full)
    return int(found.group(1)) if found else None


def _staging_tables(client: Any, database: str, table: str) -> list[str]:
    rows = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, {prefix:String})",
        parameters={"db": database, "prefix": table + STAGING_MARKER},
    ).result_rows
    return [r[0] for r in rows]


def _partitions(client: Any, database: str, table: str) -> list[tuple[str, str]]:
    """(partition id, day) of every partition of ``table`` that holds rows."""
    rows = client.query(
        "SELECT partition_id, any(partition) FROM system.parts WHERE database = {db:String} AND table = {t:String} "
        "AND active AND rows > 0 GROUP BY partition_id ORDER BY partition_id",
        parameters={"db": database, "t": table},
    ).result_rows
    return [(str(pid), str(day).strip("'")) for pid, day in rows]


def recover_staging(client: Any, database: str, table: str) -> list[str]:
    """Move every partition of a staging table back into ``table`` and drop the staging table.

    Returns the staging tables that still held partitions (an interrupted run's).
    """
    recovered = []
    for staging in _staging_tables(client, database, table):
        partitions = _partitions(client, database, staging)
        for pid, _day in partitions:
            client.command(f"ALTER TABLE {database}.{staging} MOVE PARTITION ID '{pid}' TO TABLE {database}.{table}")
        client.command(f"DROP TABLE {database}.{staging}")
        if partitions:
            log.warning(
                "moved %d partition(s) of %s.%s back (an archival was interrupted)", len(partitions), database, staging
            )
            recovered.append(staging)
    return recovered


def lake_day_checksum(lake: Lake, spec: StreamSpec, day: dt.date) -> KeyChecksum | None:
    """Key checksum of one day of silver (None: there is no silver table)."""
    silver = lake.table("silver", spec.name)
    if silver is None:
        return None
    keys = silver.to_pyarrow_dataset().to_table(filter=pads.field("event_date") == day, columns=["machine_id", "seq"])
    return lake_key_checksum(keys)


def _verify_staged(
    client: Any, lake: Lake, spec: StreamSpec, *, database: str, staging: str, pid: str, day: str
) -> tuple[KeyChecksum, KeyChecksum, str]:
    hot = hot_key_checksums(client, database, staging, [pid]).get(pid, EMPTY)
    lake_side = lake_day_checksum(lake, spec, dt.date.fromisoformat(day))
    if lake_side is None:
        return hot, EMPTY, f"no silver/{spec.name} table in the lake"
    if hot.rows == 0:
        return hot, lake_side, "nothing staged (the partition emptied meanwhile)"
    if hot.rows != lake_side.rows:
        return hot, lake_side, f"row counts differ: hot {hot.rows}, lake {lake_side.rows}"
    if hot.checksum != lake_side.checksum:
        return hot, lake_side, "key checksums differ (same count, other events)"
    return hot, lake_side, "verified"


def archive_hot_partitions(
    hotstore: HotStore,
    lake: Lake,
    *,
    streams: Sequence[StreamSpec] = STREAMS,
    today: dt.date | None = None,
    retention_days: int | None = None,
    dry_run: bool = False,
) -> ArchivalReport:
    """Verify and drop every hot partition older than the retention (see the module docstring)."""
    settings = hotstore.settings
    today = today or dt.datetime.now(dt.UTC).date()
    retention = settings.hotstore.hot_retention_days if retention_days is None else retention_days
    cutoff = archival_cutoff(today, retention)
    database = settings.hotstore.database
    report = ArchivalReport(cutoff=cutoff.isoformat())
    client = hotstore.client()
    try:
        engines = dict(
            client.query(
                "SELECT name, engine_full FROM system.tables WHERE database = {db:String}", parameters={"db": database}
            ).result_rows
        )
        for spec in streams:
            table = spec.hot_table
            if table not in engines:
                continue
            report.ttl_days[table] = ttl_days(engines[table])
            report.recovered += recover_staging(client, database, table)
            candidates = [(pid, day) for pid, day in _partitions(client, database, table) if day < cutoff.isoformat()]
            if not candidates:
                continue
            staging = f"{table}{STAGING_MARKER}{uuid.uuid4().hex[:8]}"
            # Same columns, key and partitioning, no TTL: staged rows cannot expire mid-check.
            client.command(f"CREATE TABLE {database}.{staging} AS {database}.{table}")
            client.command(f"ALTER TABLE {database}.{staging} REMOVE TTL")
            try:
                for pid, day in candidates:
                    started = time.perf_counter()
                    client.command(
                        f"ALTER TABLE {database}.{table} MOVE PARTITION ID '{pid}' TO TABLE {database}.{staging}"
                    )
                    hot, lake_side, reason = _verify_staged(
                        client, lake, spec, database=database, staging=staging, pid=pid, day=day
                    )
                    drop = reason == "verified" and not dry_run
                    if drop:
                        client.command(f"ALTER TABLE {database}.{staging} DROP PARTITION ID '{pid}'")
                    else:
                        client.command(
                            f"ALTER TABLE {database}.{staging} MOVE PARTITION ID '{pid}' TO TABLE {database}.{table}"
                        )
                        if reason == "verified":
                            reason = "verified (dry run)"
                    verdict = PartitionVerdict(
                        spec.name, day, pid, hot, lake_side, drop, reason, round(time.perf_counter() - started, 3)
                    )
                    if not verdict.verified:
                        log.warning(
                            "hot partition %s.%s day %s kept: %s (hot %s, lake %s)",
                            database, table, day, reason, hot.as_dict(), lake_side.as_dict(),
                        )  # fmt: skip
                    report.verdicts.append(verdict)
            finally:
                recover_staging(client, database, table)  # nothing is left staged, whatever happened
    finally:
        client.close()
    return report


def ttl_warnings(report: ArchivalReport, retention_days: int) -> list[str]:
    """Tables whose TTL leaves archival no margin (see "The TTL and the order of things")."""
    return [
        f"{table}: its TTL ({days} days) deletes rows as they reach the hot retention ({retention_days} days), "
        "verified or not; raise the TTL above the retention so unverified days can be kept"
        for table, days in report.ttl_days.items()
        if days is not None and days <= retention_days
    ]


__all__ = ["ArchivalReport", "PartitionVerdict", "archival_cutoff", "archive_hot_partitions", "ttl_days"]
