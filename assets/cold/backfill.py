"""Rebuilding from the lake: silver days from bronze, and the hot store from bronze.

Bronze is the system of record: every valid event the stream accepted, as it arrived,
with its Kafka partition and offset.  Everything else can be rebuilt from it.

**Silver for a date range** (:func:`rebuild_silver`): each day of the range is read
from bronze (its ``event_date`` partition), typed and reduced to the first copy per
``(machine_id, seq)`` by the silver asset's own :func:`~plantstream.assets.silver.to_silver`
(one definition of silver), and written over that day of silver in one Delta commit
(``mode="overwrite"`` with the predicate ``event_date = day``: readers see the old day
or the new one, never a mix).  Deterministic, so running it twice leaves identical
rows (:func:`~plantstream.assets.cold.checksums.content_checksum` proves it).  One day
per commit keeps memory at one day's rows, whatever the range.  Silver's own
application transaction (the bronze version the incremental asset processed) is left
alone: the next incremental run merges what is new since then with insert-if-absent,
which finds the rebuilt rows already there.

**Hot store for a date range** (:func:`rehydrate_hot`, after a hot-store loss): each day
of bronze is reshaped by the hot-store sink's own :func:`~plantstream.streaming.hot_store_sink.raw_rows`
and inserted into ``<stream>_raw``.  The table keeps the first copy of every event in
``FINAL`` (the same rule as the stream), so the restored table answers every query as
the original did; each insert carries a deduplication token naming the stream, day,
bronze version and chunk, so repeating a re-hydration adds nothing, not even
duplicates for the background merges.  Nothing is deleted first: rows the hot store
still holds stay.  Days the table's TTL has already expired are skipped and reported
(ClickHouse would drop their rows at insert); the lake serves those.

Gold for the range is rebuilt by its own partitioned assets (a single-run backfill over
the range), after silver: :mod:`plantstream.orchestration.sensors` chains it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
from deltalake import CommitProperties, write_deltalake

from plantstream.assets.cold.archival import ttl_days
from plantstream.assets.cold.checksums import content_checksum
from plantstream.assets.silver import silver_schema, to_silver
from plantstream.connect.delta_schema import add_missing_columns
from plantstream.contract.streams import StreamSpec
from plantstream.orchestration.resources import HotStore, Lake

#: Rows per hot-store insert when re-hydrating (the stream's sink inserts up to 100k).
REHYDRATE_CHUNK_ROWS = 500_000
COMMIT_RETRIES = 20


class BackfillError(RuntimeError):
    """A backfill cannot run as asked (no bronze table, an empty or reversed range)."""


def days_between(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every day from ``start`` to ``end``, both included."""
    if end < start:
        raise BackfillError(f"the range ends ({end}) before it starts ({start})")
    return [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]


def _bronze_day(lake: Lake, spec: StreamSpec, day: dt.date) -> tuple[pa.Table, int]:
    bronze = lake.table("bronze", spec.name)
    if bronze is None:
        raise BackfillError(f"bronze/{spec.name} does not exist: nothing to rebuild from")
    rows = bronze.to_pyarrow_dataset().to_table(filter=pads.field("event_date") == day)
    return rows, bronze.version()


@dataclass(frozen=True)
class SilverDay:
    """One rebuilt day of silver."""

    stream: str
    day: str
    bronze_rows: int
    silver_rows: int
    conflicting_duplicates: int
    rows: int  # content checksum: rows
    checksum: str  # content checksum of the day's silver rows (text: JSON viewers round big integers)
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rebuild_silver_day(lake: Lake, spec: StreamSpec, day: dt.date) -> SilverDay:
    """Replace one day of ``silver/<stream>`` with what bronze holds for it."""
    started = time.perf_counter()
    bronze_rows, _version = _bronze_day(lake, spec, day)
    batch = to_silver(spec, bronze_rows) if bronze_rows.num_rows else None
    rows = batch.rows if batch is not None else silver_schema(spec).empty_table()
    existing = lake.table("silver", spec.name)
    exists = existing is not None
    if existing is not None:
        add_missing_columns(existing, rows.schema)  # a field the contract gained since it was made
    write_deltalake(
        lake.table_uri("silver", spec.name),
        rows,
        # Over an existing table: replace exactly this day.  No table yet: create it.
        mode="overwrite" if exists else "append",
        predicate=f"event_date = '{day.isoformat()}'" if exists else None,
        partition_by=["event_date"],
        storage_options=lake.storage_options,
        commit_properties=CommitProperties(max_commit_retries=COMMIT_RETRIES),
    )
    checksum = content_checksum(rows)
    return SilverDay(
        stream=spec.name,
        day=day.isoformat(),
        bronze_rows=bronze_rows.num_rows,
        silver_rows=rows.num_rows,
        conflicting_duplicates=batch.conflicts if batch is not None else 0,
        rows=checksum.rows,
        checksum=str(checksum.checksum),
        seconds=round(time.perf_counter() - started, 3),
    )


def rebuild_silver(lake: Lake, spec: StreamSpec, start: dt.date, end: dt.date) -> list[SilverDay]:
    """Rebuild every day of ``start .. end`` (both included) of ``silver/<stream>`` from bronze."""
    if lake.table("bronze", spec.name) is None:
        raise BackfillError(f"bronze/{spec.name} does not exist: nothing to rebuild from")
    return [rebuild_silver_day(lake, spec, day) for day in days_between(start, end)]


@dataclass(frozen=True)
class HotDay:
    """One re-hydrated day of ``<stream>_raw``."""

    stream: str
    day: str
    bronze_rows: int
    inserts: int
    skipped: str  # why the day was not re-hydrated ("" if it was)
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunks(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for offset in range(0, table.num_rows, rows):
        yield table.slice(offset, rows)


def hot_ttl_days(hotstore: HotStore, spec: StreamSpec) -> int | None:
    """The TTL of ``<stream>_raw`` in days as the table declares it (None: no TTL)."""
    engine = hotstore.scalar(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": hotstore.settings.hotstore.database, "t": spec.hot_table},
    )
    return ttl_days(str(engine))


def rehydrate_hot(
    hotstore: HotStore,
    lake: Lake,
    spec: StreamSpec,
    start: dt.date,
    end: dt.date,
    *,
    today: dt.date | None = None,
) -> list[HotDay]:
    """Re-insert every day of ``start .. end`` of bronze into ``<stream>_raw`` (see the module docstring)."""
    from plantstream.streaming.hot_store_sink import raw_rows
    from plantstream.streaming.hot_tables import ensure_hot_tables

    today = today or dt.datetime.now(dt.UTC).date()
    ensure_hot_tables(hotstore.settings, (spec,))  # after a loss the table may be gone too
    ttl = hot_ttl_days(hotstore, spec)
    out = []
    client = hotstore.client()
    try:
        for day in days_between(start, end):
            started = time.perf_counter()
            if ttl is not None and day + dt.timedelta(days=1) <= today - dt.timedelta(days=ttl):
                out.append(HotDay(spec.name, day.isoformat(), 0, 0, f"older than the table's TTL ({ttl} days)", 0.0))
                continue
            rows, version = _bronze_day(lake, spec, day)
            inserts = 0
            for index, chunk in enumerate(_chunks(rows, REHYDRATE_CHUNK_ROWS)):
                token = f"plantstream.rehydrate:{spec.name}:{day.isoformat()}:v{version}:{index}"
                client.insert_arrow(
                    spec.hot_table, raw_rows(spec, chunk), settings={"insert_deduplication_token": token}
                )
                inserts += 1
            out.append(
                HotDay(spec.name, day.isoformat(), rows.num_rows, inserts, "", round(time.perf_counter() - started, 3))
            )
    finally:
        client.close()
    return out
