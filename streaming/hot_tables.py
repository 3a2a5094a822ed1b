"""DDL of the hot store's tables (ClickHouse; chDB-backed locally), derived from the streams.

Every stream has one raw table, ``<stream>_raw`` (:attr:`StreamSpec.hot_table`), whose
columns come from the stream's contract (:func:`plantstream.contract.columns.bronze_schema`)
- nobody writes a column list down twice.  Each is a ``ReplacingMergeTree`` keyed by
``(machine_id, seq)``: a row written twice (a replay after a crash, batches cut
differently) collapses into one in the deduplicated view (``SELECT ... FROM t FINAL``),
and the copy that stays is the **first** one (lowest Kafka offset; the version column
``copy_rank`` is ``2^63 - 1 - kafka_offset``), the rule of every PlantStream store.
``non_replicated_deduplication_window`` lets ClickHouse drop an insert it has already
seen by its ``insert_deduplication_token`` (the fast path; on a replicated production
table the setting is ``replicated_deduplication_window``).

Each table carries its schema version in its comment; :func:`ensure_hot_tables` migrates
a table created by an older PlantStream (copy into the new shape, swap, drop) instead of
silently writing rows into a shape that no longer matches.
"""

from __future__ import annotations

import logging

import pyarrow as pa

from plantstream.connect.hotstore import ensure_database, hotstore_client
from plantstream.contract.columns import MILLIS_FIELDS, bronze_schema
from plantstream.contract.streams import STREAMS, TELEMETRY_STREAM, StreamSpec
from plantstream.settings import Settings

log = logging.getLogger(__name__)

TELEMETRY_RAW_TABLE = TELEMETRY_STREAM.hot_table
"""Every valid telemetry event; one row per (machine_id, seq) in ``FINAL``."""

TELEMETRY_WINDOWS_TABLE = "telemetry_windows"
"""Window aggregates; one row per (machine_id, signal, window_seconds, window_start) in ``FINAL``."""

#: The version column of raw tables: larger for earlier copies, so ``FINAL`` keeps the first.
COPY_RANK = "copy_rank"
COPY_RANK_BASE = 2**63 - 1
RAW_SCHEMA_VERSION = 2

_ENVELOPE_TAIL = ("site", "area", "line", "v", "event_ts", *MILLIS_FIELDS, "kafka_partition", "kafka_offset")


def raw_columns(spec: StreamSpec) -> list[str]:
    """Column order of ``<stream>_raw``: the key, the stream's own fields, the envelope."""
    names = bronze_schema(spec).names
    own = [n for n in names if n not in {"machine_id", "seq", *_ENVELOPE_TAIL, "event_date"}]
    return ["machine_id", "seq", *own, *_ENVELOPE_TAIL]


def _clickhouse_type(spec: StreamSpec, field: pa.Field) -> str:
    name, arrow = field.name, field.type
    if name in MILLIS_FIELDS or pa.types.is_timestamp(arrow):
        base = "DateTime64(3, 'UTC')"
    elif name == "seq":
        base = "UInt64"
    elif name == "v":
        base = "UInt16"
    elif pa.types.is_int32(arrow):
        base = "Int32"
    elif pa.types.is_integer(arrow):
        base = "Int64"
    elif pa.types.is_floating(arrow):
        base = "Float64"
    elif pa.types.is_boolean(arrow):
        base = "Bool"
    elif pa.types.is_string(arrow):
        base = "String"
    elif pa.types.is_map(arrow):
        value = "Float64" if pa.types.is_floating(arrow.item_type) else "String"
        return f"Map(LowCardinality(String), {value})"
    else:  # pragma: no cover - guards contract additions without a column type here
        raise TypeError(f"{spec.name}.{name}: no ClickHouse type for {arrow}")
    if field.nullable:
        base = f"Nullable({base})"
    if name in spec.low_cardinality and pa.types.is_string(arrow):
        base = f"LowCardinality({base})"
    return base


def _comment(spec: StreamSpec) -> str:
    return f"plantstream {spec.hot_table} v{RAW_SCHEMA_VERSION}"


#: The raw tables' TTL is a backstop this many days beyond ``hot_retention_days``: verified
#: archival (assets/cold/archival.py) drops a day at the retention once the lake holds it; a
#: day it could not verify stays queryable (and reported) for the margin before the TTL
#: deletes it.  A TTL equal to the retention would delete days before they are verified.
RAW_TTL_MARGIN_DAYS = 7


def raw_ttl_days(settings: Settings) -> int:
    return settings.hotstore.hot_retention_days + RAW_TTL_MARGIN_DAYS


def raw_ttl(settings: Settings) -> str:
    return f"toDateTime(event_ts) + INTERVAL {raw_ttl_days(settings)} DAY"


def raw_table_ddl(settings: Settings, spec: StreamSpec, *, table: str | None = None) -> str:
    hs = settings.hotstore
    schema = bronze_schema(spec)
    columns = [f"    `{name}` {_clickhouse_type(spec, schema.field(name))}" for name in raw_columns(spec)]
    columns.append(f"    `{COPY_RANK}` UInt64")
    body = ",\n".join(columns)
    return f"""
CREATE TABLE IF NOT EXISTS {hs.database}.{table or spec.hot_table}
(
{body}
)
ENGINE = ReplacingMergeTree({COPY_RANK})
PARTITION BY toDate(event_ts)
ORDER BY (machine_id, seq)
TTL {raw_ttl(settings)}
SETTINGS non_replicated_deduplication_window = {hs.dedup_window}
COMMENT '{_comment(spec)}'
""".strip()


def telemetry_windows_ddl(settings: Settings) -> str:
    hs = settings.hotstore
    # version = 2 * count + final: the fullest, final emission of a window wins over a
    # provisional one (end of a drain run), whatever order replays insert them in.
    return f"""
CREATE TABLE IF NOT EXISTS {hs.database}.{TELEMETRY_WINDOWS_TABLE}
(
    machine_id      LowCardinality(String),
    signal          LowCardinality(String),
    window_seconds  UInt32,
    window_start    DateTime64(3, 'UTC'),
    window_end      DateTime64(3, 'UTC'),
    `count`         UInt64,
    `min`           Float64,
    `max`           Float64,
    mean            Float64,
    std             Float64,
    p95             Float64,
    `last`          Float64,
    last_ts         DateTime64(3, 'UTC'),
    final           UInt8,
    version         UInt64,
    kafka_partition Int32
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toDate(window_start)
ORDER BY (machine_id, signal, window_seconds, window_start)
TTL toDateTime(window_start) + INTERVAL {hs.hot_retention_days} DAY
SETTINGS non_replicated_deduplication_window = {hs.dedup_window}
""".strip()


def _migrate_raw_table(client, settings: Settings, spec: StreamSpec) -> None:
    """Bring a raw table of an older shape into the current one, keeping its rows.

    The rows are copied into a new table (columns both shapes share; the first-copy
    rank computed from the offset), the two are swapped atomically and the old one is
    dropped.  The hot tier is rebuildable from the lake, but a silent loss of 30 days
    of hot data on upgrade would still surprise an operator.
    """
    db, table = settings.hotstore.database, spec.hot_table
    fresh = f"{table}__v{RAW_SCHEMA_VERSION}"
    client.command(f"DROP TABLE IF EXISTS {db}.{fresh}")
    client.command(raw_table_ddl(settings, spec, table=fresh))
    old = {row[0] for row in client.query(f"DESCRIBE TABLE {db}.{table}").result_rows}
    shared = [c for c in raw_columns(spec) if c in old]
    rank = f"toUInt64({COPY_RANK_BASE}) - toUInt64(kafka_offset)" if "kafka_offset" in old else "0"
    select = ", ".join([*shared, f"{rank} AS {COPY_RANK}"])
    client.command(f"INSERT INTO {db}.{fresh} ({', '.join([*shared, COPY_RANK])}) SELECT {select} FROM {db}.{table}")
    client.command(f"EXCHANGE TABLES {db}.{table} AND {db}.{fresh}")
    client.command(f"DROP TABLE {db}.{fresh}")
    log.warning("migrated hot table %s.%s to schema v%d", db, table, RAW_SCHEMA_VERSION)


def _align_raw_ttl(client, settings: Settings, spec: StreamSpec) -> None:
    """Give an existing raw table the TTL the settings ask for (a changed retention, or a
    table made before the backstop margin): ``MODIFY TTL`` keeps the rows and the shape."""
    db, table = settings.hotstore.database, spec.hot_table
    engine = client.query(
        "SELECT engine_full FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        {"db": db, "t": table},
    ).result_rows[0][0]
    if f"INTERVAL {raw_ttl_days(settings)} DAY" not in str(engine):
        client.command(f"ALTER TABLE {db}.{table} MODIFY TTL {raw_ttl(settings)}")
        log.warning("hot table %s.%s: TTL set to %d days", db, table, raw_ttl_days(settings))


def ensure_hot_tables(settings: Settings, streams: tuple[StreamSpec, ...] = STREAMS) -> None:
    """Create the database, every stream's raw table and the window table if missing;
    migrate raw tables of an older shape (idempotent)."""
    ensure_database(settings)
    client = hotstore_client(settings)
    try:
        db = settings.hotstore.database
        existing = dict(
            client.query("SELECT name, comment FROM system.tables WHERE database = {db:String}", {"db": db}).result_rows
        )
        for spec in streams:
            if spec.hot_table in existing and existing[spec.hot_table] != _comment(spec):
                _migrate_raw_table(client, settings, spec)
            elif spec.hot_table in existing:
                _align_raw_ttl(client, settings, spec)
            else:
                client.command(raw_table_ddl(settings, spec))
        client.command(telemetry_windows_ddl(settings))
    finally:
        client.close()


__all__ = ["COPY_RANK", "TELEMETRY_RAW_TABLE", "TELEMETRY_WINDOWS_TABLE", "ensure_hot_tables", "raw_columns"]
