"""Silver: each stream's bronze made typed and unique per (machine_id, seq).

Bronze is append-only and may hold an event twice (a re-send by the edge, a replay of
history through the same path); silver holds each event exactly once, with real
timestamps.  One asset per stream of :data:`plantstream.contract.streams.STREAMS`, all
built by :func:`silver_asset` from the stream's declaration: no stream has code of its
own here.

Incremental by construction: each materialisation reads only the bronze data files
added since the bronze version it last processed (recorded in silver's own commit as a
Delta application transaction), deduplicates them, and appends to silver only the events
it does not hold yet (insert-if-absent on (machine_id, seq, event_date), decided against
silver's keys of the touched days): **the first copy wins**, the rule of every
PlantStream store.  A later copy whose content differs (the same machine and sequence
number with another value: a device or gateway bug, not a re-send) is not silently
dropped: it is counted as a *conflicting duplicate* and reported in the
materialisation's metadata with a sample.  Re-running with nothing new changes nothing.

Why an anti-join and an append, not a Delta merge: delta-rs 1.6's merge writes its new
files with ``string_view`` columns, and pyarrow (23) cannot evaluate a filter on a string
column of such a file (``no kernel matching input types (string, string_view)``), so every
later filtered read of silver failed.  ``write_deltalake`` writes plain ``string``.  The
append relies on one writer per silver table at a time (one Dagster materialisation of
the asset), as the application-transaction version already does; the uniqueness check
(``quality_checks``) would catch a second concurrent writer's duplicates.

Each materialisation also reports which ``event_date`` partitions it changed, as
observations of ``silver/<stream>_by_day`` (``assets/silver_days.py``): that is how a late
reading in an old day makes exactly the gold days that read it stale.
"""

# No `from __future__ import annotations`: Dagster inspects the context annotation at runtime.
import time
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from plantstream.assets.silver_days import SILVER_DAYS, data_files, days_added, report_silver_days
from plantstream.connect.delta_schema import add_missing_columns
from plantstream.contract.columns import MILLIS_FIELDS, TIMESTAMP_MS_UTC, bronze_schema, contract_schema
from plantstream.contract.streams import STREAMS, StreamSpec
from plantstream.orchestration.resources import Lake

OWNERS = ["team:data-platform"]
IDENTITY = ("site", "area", "line", "machine_id", "seq")
#: Wire timestamps (epoch ms) -> typed silver columns.
TYPED_TIMES = {"source_ts": "source_time", "read_ts": "read_time", "ingest_ts": "ingest_time"}
# Not part of an event's content: when it was read, handed over and where it landed.
_NOT_CONTENT = {"read_time", "ingest_time", "kafka_partition", "kafka_offset", "event_date"}
CONFLICT_SAMPLE = 5
#: What identifies a bronze row ((kafka_partition, kafka_offset)) and the event in it ((machine_id, seq)).
KEY_COLUMNS = ("machine_id", "seq", "kafka_partition", "kafka_offset")
#: Rows per batch when new bronze rows stream into a new silver table.
STREAM_BATCH_ROWS = 262_144


def own_fields(spec: StreamSpec) -> list[str]:
    """The stream's payload fields (neither envelope nor version)."""
    envelope = {*IDENTITY, *MILLIS_FIELDS, "v"}
    return [name for name in contract_schema(spec.payload).names if name not in envelope]


def silver_schema(spec: StreamSpec) -> pa.Schema:
    """Identity, the stream's own fields, typed times, then where each row came from."""
    bronze = bronze_schema(spec)
    fields = [pa.field(name, bronze.field(name).type) for name in (*IDENTITY, *own_fields(spec))]
    fields += [pa.field("event_time", TIMESTAMP_MS_UTC)]
    fields += [pa.field(typed, TIMESTAMP_MS_UTC) for typed in TYPED_TIMES.values()]
    fields += [pa.field("event_date", pa.date32()), pa.field("kafka_partition", pa.int32())]
    fields += [pa.field("kafka_offset", pa.int64())]
    return pa.schema(fields)


def silver_app_id(spec: StreamSpec) -> str:
    return f"plantstream.silver.{spec.name}<-bronze.{spec.name}"


def _as_utc_ms(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_timestamp(column.type):
        return column.cast(TIMESTAMP_MS_UTC)
    return column.cast(pa.int64()).cast(TIMESTAMP_MS_UTC)


def _content_columns(spec: StreamSpec) -> list[str]:
    return [n for n in silver_schema(spec).names if n not in _NOT_CONTENT and n not in ("machine_id", "seq")]


@dataclass(frozen=True)
class SilverBatch:
    """New silver rows of one batch of bronze rows, and the conflicts found among them."""

    rows: pa.Table
    conflicts: int
    conflict_sample: list[dict]


def typed_silver(spec: StreamSpec, bronze: pa.Table) -> pa.Table:
    """Bronze rows in silver's schema: typed times, ``event_date`` from the event time (no deduplication)."""
    schema = silver_schema(spec)
    columns = {name: bronze.column(name) for name in schema.names if name in bronze.column_names}
    for name in own_fields(spec):  # a field the contract gained after these rows were written
        if name not in columns and schema.field(name).nullable:
            columns[name] = pa.nulls(bronze.num_rows, schema.field(name).type)
    event_ts = bronze.column("event_ts") if "event_ts" in bronze.column_names else bronze.column("read_ts")
    columns["event_time"] = _as_utc_ms(event_ts)
    for raw, typed in TYPED_TIMES.items():
        columns[typed] = _as_utc_ms(bronze.column(raw))
    columns["event_date"] = pc.cast(columns["event_time"], pa.date32())
    return pa.table({name: columns[name] for name in schema.names}).cast(schema)


def _copies(keys: pa.Table) -> pa.Table:
    """Every copy of each (machine_id, seq) that occurs more than once, numbered: copy 1 wins.

    ``keys`` holds ``KEY_COLUMNS`` of the rows; copies are ordered by Kafka offset (then
    partition), so the first copy written is kept, as in every PlantStream store.  Duplicates
    are rare (re-sends), so this finds them on the four key columns alone and everything
    else touches only the few rows it returns.
    """
    with duckdb.connect() as con:
        con.register("k", keys)
        return (
            con.sql(
                "WITH repeated AS (SELECT machine_id, seq FROM k GROUP BY machine_id, seq HAVING count(*) > 1) "
                "SELECT k.machine_id, k.seq, k.kafka_partition, k.kafka_offset, row_number() OVER ("
                "PARTITION BY k.machine_id, k.seq ORDER BY k.kafka_offset, k.kafka_partition) AS copy "
                "FROM k SEMI JOIN repeated r ON k.machine_id = r.machine_id AND k.seq = r.seq "
                "ORDER BY k.machine_id, k.seq, copy"
            )
            .arrow()
            .read_all()
        )


def _conflicts(spec: StreamSpec, copies: pa.Table) -> tuple[int, list[dict]]:
    """(machine_id, seq) keys whose copies (typed silver rows) differ in content, and a sample."""
    if not copies.num_rows:
        return 0, []
    content = ", ".join(f'"{c}"' for c in _content_columns(spec))
    with duckdb.connect() as con:
        con.register("typed", copies)
        conflicting = con.sql(
            f"SELECT machine_id, seq, count(DISTINCT ({content})) AS versions FROM typed "
            "GROUP BY machine_id, seq HAVING count(DISTINCT (" + content + ")) > 1 ORDER BY machine_id, seq"
        ).fetchall()
    return len(conflicting), [{"machine_id": m, "seq": s, "versions": v} for m, s, v in conflicting[:CONFLICT_SAMPLE]]


def _row_ids(table: pa.Table) -> pa.Array:
    """One int64 per bronze row, unique by (kafka_partition, kafka_offset) (offsets stay below 2^47)."""
    partition = pc.cast(table["kafka_partition"], pa.int64())
    return pc.add(pc.multiply(pc.add(partition, 1), 2**47), pc.cast(table["kafka_offset"], pa.int64()))


def _without(table: pa.Table, losers: pa.Array) -> pa.Table:
    if not len(losers) or not table.num_rows:
        return table
    return table.filter(pc.invert(pc.is_in(_row_ids(table), value_set=losers)))


def to_silver(spec: StreamSpec, bronze: pa.Table) -> SilverBatch:
    """Type bronze rows, keep the first copy of each (machine_id, seq), count conflicting copies."""
    copies = _copies(bronze.select(KEY_COLUMNS))
    losers = _row_ids(copies.filter(pc.greater(copies["copy"], 1)))
    repeated = pc.is_in(_row_ids(bronze), value_set=_row_ids(copies))
    conflicts, sample = _conflicts(spec, typed_silver(spec, bronze.filter(repeated)))
    return SilverBatch(typed_silver(spec, _without(bronze, losers)), conflicts, sample)


def _conflicts_with_silver(spec: StreamSpec, silver: DeltaTable, new: pa.Table) -> tuple[int, list[dict]]:
    """New rows whose (machine_id, seq) silver already holds with other content.

    Silver's keys of the touched days are read first (two columns); content only for the
    keys that are there already, which a batch of new events normally has none of.
    """
    if not new.num_rows:
        return 0, []
    dataset = silver.to_pyarrow_dataset()
    where = _touched(new)
    held = _held_keys(dataset, new)
    if not held.num_rows:
        return 0, []
    with duckdb.connect() as con:
        con.register("n", new.select(["machine_id", "seq"]))
        con.register("h", held)
        both = con.sql("SELECT DISTINCT n.machine_id, n.seq FROM n JOIN h USING (machine_id, seq)").arrow().read_all()
    if not both.num_rows:
        return 0, []
    seqs = pc.unique(both["seq"])
    existing = dataset.to_table(filter=where & pads.field("seq").isin(seqs))
    existing = existing.filter(pc.is_in(existing["machine_id"], value_set=pc.unique(new["machine_id"])))
    content = _content_columns(spec)
    same = " AND ".join(f'n."{c}" IS NOT DISTINCT FROM s."{c}"' for c in content)
    with duckdb.connect() as con:
        con.register("n", new)
        con.register("s", existing)
        rows = con.sql(
            f"SELECT n.machine_id, n.seq FROM n JOIN s ON n.machine_id = s.machine_id AND n.seq = s.seq "
            f"WHERE NOT ({same}) ORDER BY n.machine_id, n.seq"
        ).fetchall()
    return len(rows), [{"machine_id": m, "seq": s, "versions": 2} for m, s in rows[:CONFLICT_SAMPLE]]


def _touched(new: pa.Table) -> pads.Expression:
    """Silver's rows that ``new`` can collide with: its days and seq range (integer columns only:
    a string filter fails on files that hold ``string_view``, e.g. written by an earlier merge)."""
    dates = pc.unique(new.column("event_date")).to_pylist()
    low, high = pc.min(new["seq"]).as_py(), pc.max(new["seq"]).as_py()
    return pads.field("event_date").isin(dates) & (pads.field("seq") >= low) & (pads.field("seq") <= high)


def _held_keys(dataset: pads.Dataset, new: pa.Table) -> pa.Table:
    """(machine_id, seq, event_date) that silver already holds among those of ``new``'s days,
    seq range and machines (the machine filter in memory, see :func:`_touched`)."""
    held = dataset.to_table(columns=["machine_id", "seq", "event_date"], filter=_touched(new))
    return held.filter(pc.is_in(held["machine_id"].cast(pa.string()), value_set=pc.unique(new["machine_id"])))


def _absent(silver: DeltaTable, rows: pa.Table) -> pa.Table:
    """The rows of ``rows`` whose (machine_id, seq, event_date) silver does not hold (insert-if-absent)."""
    held = _held_keys(silver.to_pyarrow_dataset(), rows)
    if not held.num_rows:
        return rows
    with duckdb.connect() as con:
        con.register("n", rows.append_column("_row", pa.array(range(rows.num_rows), pa.int64())))
        con.register("h", held)
        keep = (
            con.sql(
                "SELECT _row FROM n ANTI JOIN h ON n.machine_id = h.machine_id AND n.seq = h.seq "
                "AND n.event_date = h.event_date ORDER BY _row"
            )
            .arrow()
            .read_all()
        )
    return rows.take(keep["_row"])


def _new_bronze_files(lake: Lake, spec: StreamSpec, bronze: DeltaTable, since_version: int | None) -> pads.Dataset:
    """The bronze data files added after ``since_version`` (all files if ``None``), not read yet."""
    dataset = bronze.to_pyarrow_dataset()
    if since_version is None:
        return dataset
    old = lake.table("bronze", spec.name, version=since_version)
    old_files = {uri.rsplit("/", 1)[-1] for uri in old.file_uris()} if old is not None else set()
    fragments = [f for f in dataset.get_fragments() if f.path.rsplit("/", 1)[-1] not in old_files]
    return pads.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)


def _typed_batches(spec: StreamSpec, new: pads.Dataset, losers: pa.Array) -> Iterator[pa.RecordBatch]:
    """The new bronze rows, typed and without the losing copies, a batch at a time."""
    schema = silver_schema(spec)
    for batch in new.to_batches(batch_size=STREAM_BATCH_ROWS, batch_readahead=2, fragment_readahead=2):
        if batch.num_rows:
            yield from typed_silver(spec, _without(pa.Table.from_batches([batch]), losers)).cast(schema).to_batches()


def update_silver(lake: Lake, spec: StreamSpec) -> dict:
    """Merge new bronze rows of ``spec`` into its silver table; returns figures for the metadata.

    Memory stays bounded by a batch, not by the backlog, where silver does not exist yet (a
    first build, a rebuild): duplicates are found on the four key columns first, then the
    new rows stream through typing into the Delta writer.  An existing table gets the new
    rows (insert-if-absent against silver's keys, then an append), which holds them in memory.
    """
    started = time.perf_counter()
    bronze = lake.table("bronze", spec.name)
    if bronze is None:
        raise dg.Failure(f"bronze {spec.name} does not exist yet: run the stream (plantstream stream) first")
    bronze_version = bronze.version()
    silver = lake.table("silver", spec.name)
    schema = silver_schema(spec)
    if silver is not None and add_missing_columns(silver, schema):  # the contract gained a field
        silver = lake.table("silver", spec.name)
    files_before = data_files(silver)
    app_id = silver_app_id(spec)
    done_version = silver.transaction_version(app_id) if silver is not None else None
    commit = CommitProperties(app_transactions=[Transaction(app_id, bronze_version)])
    read = inserted = conflicts = 0
    sample: list[dict] = []
    if done_version is None or done_version < bronze_version:
        new = _new_bronze_files(lake, spec, bronze, done_version)
        copies = _copies(new.to_table(columns=list(KEY_COLUMNS)))
        losers = _row_ids(copies.filter(pc.greater(copies["copy"], 1)))
        if copies.num_rows:
            repeated = new.to_table(filter=pads.field("kafka_offset").isin(pc.unique(copies["kafka_offset"])))
            repeated = repeated.filter(pc.is_in(_row_ids(repeated), value_set=_row_ids(copies)))
            conflicts, sample = _conflicts(spec, typed_silver(spec, repeated))
        if silver is None:
            rows = pa.RecordBatchReader.from_batches(schema, _typed_batches(spec, new, losers))
            write_deltalake(
                lake.table_uri("silver", spec.name),
                rows,
                partition_by=["event_date"],
                mode="append",
                storage_options=lake.storage_options,
                commit_properties=commit,
            )
        else:
            rows = pa.Table.from_batches(list(_typed_batches(spec, new, losers)), schema=schema)
            if rows.num_rows:
                against_silver, more = _conflicts_with_silver(spec, silver, rows)
                conflicts += against_silver
                sample = (sample + more)[:CONFLICT_SAMPLE]
                rows = _absent(silver, rows)
                inserted = rows.num_rows
            # Also with nothing to add: the commit records the bronze version as processed.
            write_deltalake(
                silver,
                rows,
                partition_by=["event_date"],
                mode="append",
                commit_properties=commit,
            )
        read = new.count_rows()
    after = lake.table("silver", spec.name)
    silver_rows = lake.row_count("silver", spec.name)
    if silver is None:
        inserted = silver_rows
    changed = days_added(after, files_before) if after is not None else []
    return {
        "bronze_version": bronze_version,
        "bronze_rows_read": read,
        "rows_inserted": inserted,
        "duplicates_dropped": read - inserted,
        "conflicting_duplicates": conflicts,
        "conflict_sample": sample,
        "silver_rows": silver_rows,
        "changed_days": changed,
        "seconds": round(time.perf_counter() - started, 3),
    }


def silver_asset(spec: StreamSpec) -> dg.AssetsDefinition:
    """The silver asset of one stream (``silver/<stream>``, from ``bronze/<stream>``)."""

    @dg.asset(
        name=spec.name,
        key_prefix=["silver"],
        deps=[dg.AssetKey(["bronze", spec.name])],
        group_name="lakehouse",
        owners=OWNERS,
        kinds={"delta", "s3"},
        description=f"Silver {spec.name} ({spec.payload.__name__} events): bronze typed and unique per "
        "(machine_id, seq), first copy wins; conflicting duplicates are counted and reported. Incremental: each "
        "run merges only the bronze files added since the bronze version it last processed.",
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(f.name, str(f.type)) for f in silver_schema(spec)],
            ),
            "unique_key": "(machine_id, seq)",
            "partitioned_by": "event_date",
            "topic": spec.topic.name,
        },
        retry_policy=dg.RetryPolicy(
            max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
        ),
    )
    def _silver(context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake]) -> dg.MaterializeResult:
        figures = update_silver(lake, spec)
        if figures["conflicting_duplicates"]:
            context.log.warning(
                f"silver {spec.name}: {figures['conflicting_duplicates']} conflicting duplicates "
                f"(same machine and seq, other content; first copy kept): {figures['conflict_sample']}"
            )
        context.log.info(f"silver {spec.name}: {figures}")
        days = report_silver_days(context, spec, lake.table("silver", spec.name), figures["changed_days"])
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": figures["silver_rows"],
                "rows_inserted": figures["rows_inserted"],
                "bronze_rows_read": figures["bronze_rows_read"],
                "duplicates_dropped": figures["duplicates_dropped"],
                "conflicting_duplicates": figures["conflicting_duplicates"],
                "conflict_sample": dg.MetadataValue.json(figures["conflict_sample"]),
                "bronze_version": figures["bronze_version"],
                "dagster/uri": lake.table_uri("silver", spec.name),
                "seconds": figures["seconds"],
                "changed_event_dates": dg.MetadataValue.json([d.isoformat() for d in figures["changed_days"]]),
                "days_reported": dg.MetadataValue.int(len(days)),
            }
        )

    return _silver


SILVER_ASSETS = [silver_asset(spec) for spec in STREAMS]


def defs() -> dg.Definitions:
    return dg.Definitions(assets=[*SILVER_ASSETS, *SILVER_DAYS.values()])
