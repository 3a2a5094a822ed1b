"""Silver telemetry: bronze made typed and unique per (machine_id, seq).

Bronze is append-only and may hold a reading twice (the stream is at-least-once into
bronze only across a crash window it cannot close, and replays of history go through
the same path); silver holds each reading exactly once, with real timestamps.

Incremental by construction: each materialisation reads only the bronze data files
added since the bronze version it last processed (recorded in silver's own commit as a
Delta application transaction), deduplicates them, and merges them into silver with
insert-if-absent on (machine_id, seq).  Re-running with nothing new changes nothing.
"""

# No `from __future__ import annotations`: Dagster inspects the context annotation at runtime.
import time

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from plantstream.orchestration.resources import Lake

BRONZE = ("bronze", "telemetry")
SILVER = ("silver", "telemetry")
SILVER_APP_ID = "plantstream.silver.telemetry<-bronze.telemetry"
OWNERS = ["team:data-platform"]

TIMESTAMP_COLUMNS = {"source_ts": "source_time", "read_ts": "read_time", "ingest_ts": "ingest_time"}
SILVER_SCHEMA = pa.schema(
    [
        ("site", pa.string()),
        ("area", pa.string()),
        ("line", pa.string()),
        ("machine_id", pa.string()),
        ("seq", pa.int64()),
        ("signal", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("quality", pa.string()),
        ("event_time", pa.timestamp("ms", tz="UTC")),
        ("source_time", pa.timestamp("ms", tz="UTC")),
        ("read_time", pa.timestamp("ms", tz="UTC")),
        ("ingest_time", pa.timestamp("ms", tz="UTC")),
        ("event_date", pa.date32()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)


def _as_utc_ms(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.timestamp("ms", tz="UTC"))
    return column.cast(pa.int64()).cast(pa.timestamp("ms", tz="UTC"))


def to_silver(bronze: pa.Table) -> pa.Table:
    """Type bronze rows and keep the first copy of each (machine_id, seq)."""
    event_ts = bronze.column("event_ts") if "event_ts" in bronze.column_names else bronze.column("read_ts")
    columns = {name: bronze.column(name) for name in SILVER_SCHEMA.names if name in bronze.column_names}
    columns["event_time"] = _as_utc_ms(event_ts)
    for raw, typed in TIMESTAMP_COLUMNS.items():
        columns[typed] = _as_utc_ms(bronze.column(raw))
    columns["event_date"] = pc.cast(columns["event_time"], pa.date32())
    table = pa.table({name: columns[name] for name in SILVER_SCHEMA.names}).cast(SILVER_SCHEMA)
    with duckdb.connect() as con:
        con.register("typed", table)
        first_copies = con.sql(
            "SELECT * FROM typed QUALIFY row_number() OVER (PARTITION BY machine_id, seq ORDER BY kafka_offset) = 1"
        )
        return first_copies.arrow().read_all().cast(SILVER_SCHEMA)


def _new_bronze_rows(lake: Lake, bronze: DeltaTable, since_version: int | None) -> pa.Table:
    """Rows in bronze data files added after ``since_version`` (all rows if ``None``)."""
    dataset = bronze.to_pyarrow_dataset()
    if since_version is None:
        return dataset.to_table()
    old = lake.table(*BRONZE, version=since_version)
    old_files = {uri.rsplit("/", 1)[-1] for uri in old.file_uris()} if old is not None else set()
    fragments = [f for f in dataset.get_fragments() if f.path.rsplit("/", 1)[-1] not in old_files]
    if not fragments:
        return dataset.schema.empty_table()
    return pads.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem).to_table()


def update_silver(lake: Lake) -> dict[str, int | float]:
    """Merge new bronze rows into silver; returns figures for the asset's metadata."""
    started = time.perf_counter()
    bronze = lake.table(*BRONZE)
    if bronze is None:
        raise dg.Failure("bronze telemetry does not exist yet: run the stream (plantstream stream) first")
    bronze_version = bronze.version()
    silver = lake.table(*SILVER)
    done_version = silver.transaction_version(SILVER_APP_ID) if silver is not None else None
    if done_version is not None and done_version >= bronze_version:
        new = SILVER_SCHEMA.empty_table()
        read = 0
    else:
        raw = _new_bronze_rows(lake, bronze, done_version)
        read = raw.num_rows
        new = to_silver(raw) if read else SILVER_SCHEMA.empty_table()
    commit = CommitProperties(app_transactions=[Transaction(SILVER_APP_ID, bronze_version)])
    if silver is None:
        write_deltalake(
            lake.table_uri(*SILVER),
            new,
            partition_by=["event_date"],
            mode="append",
            storage_options=lake.storage_options,
            commit_properties=commit,
        )
        inserted = new.num_rows
    elif read:
        metrics = (
            silver.merge(
                new,
                predicate="t.machine_id = s.machine_id AND t.seq = s.seq AND t.event_date = s.event_date",
                source_alias="s",
                target_alias="t",
                commit_properties=commit,
            )
            .when_not_matched_insert_all()
            .execute()
        )
        inserted = int(metrics.get("num_target_rows_inserted", 0))
    else:
        inserted = 0
    return {
        "bronze_version": bronze_version,
        "bronze_rows_read": read,
        "rows_inserted": inserted,
        "duplicates_dropped": read - inserted,
        "silver_rows": lake.row_count(*SILVER),
        "seconds": round(time.perf_counter() - started, 3),
    }


@dg.asset(
    key=["silver", "telemetry"],
    deps=[dg.AssetKey(["bronze", "telemetry"])],
    group_name="lakehouse",
    owners=OWNERS,
    kinds={"delta", "s3"},
    description=__doc__,
    metadata={
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(f.name, str(f.type)) for f in SILVER_SCHEMA],
        ),
        "unique_key": "(machine_id, seq)",
        "partitioned_by": "event_date",
    },
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
)
def telemetry_silver(context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake]) -> dg.MaterializeResult:
    figures = update_silver(lake)
    context.log.info(f"silver telemetry: {figures}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": figures["silver_rows"],
            "rows_inserted": figures["rows_inserted"],
            "bronze_rows_read": figures["bronze_rows_read"],
            "duplicates_dropped": figures["duplicates_dropped"],
            "bronze_version": figures["bronze_version"],
            "dagster/uri": lake.table_uri(*SILVER),
            "seconds": figures["seconds"],
        }
    )


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[telemetry_silver])
