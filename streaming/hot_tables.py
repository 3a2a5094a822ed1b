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

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from plantstream.connect.hotstore import ensure_database, hotstore_client
from plantstream.contract.columns import MILLIS_FIELDS, bronze_schema, contract_schema
from plantstream.contract.streams import ALERTS_STREAM, STREAMS, TELEMETRY_STREAM, StreamSpec
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
    """Names the table's shape: the raw layout's version and a digest of its columns, so a
    field added to the contract migrates the existing table (``ensure_hot_tables``) with
    nobody bumping a version by hand."""
    schema = bronze_schema(spec)
    columns = ",".join(f"{name}:{_clickhouse_type(spec, schema.field(name))}" for name in raw_columns(spec))
    digest = hashlib.sha256(columns.encode()).hexdigest()[:12]
    return f"plantstream {spec.hot_table} v{RAW_SCHEMA_VERSION} columns {digest}"


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


OEE_LIVE_TABLE = "oee_live"
"""Live OEE (streaming/oee_live.py): one row per (scope, line, machine, window kind, shift instance) in ``FINAL``."""

TWIN_STATE_TABLE = "twin_state"
"""The digital twin (streaming/twin.py): one row per machine in ``FINAL``, its latest state."""


@dataclass(frozen=True, slots=True)
class DerivedTable:
    """A hot table a branch of the flow derives (not a stream's raw table): name, schema
    version (kept in the table's comment, so :func:`ensure_hot_tables` migrates an older
    shape instead of writing into it) and the DDL for a given table name."""

    name: str
    version: int
    ddl: Callable[[Settings, str], str]

    @property
    def comment(self) -> str:
        return f"plantstream {self.name} v{self.version}"

    def create_sql(self, settings: Settings, table: str | None = None) -> str:
        return f"{self.ddl(settings, table or self.name)}\nCOMMENT '{self.comment}'"


def oee_live_ddl(settings: Settings, table: str = OEE_LIVE_TABLE) -> str:
    hs = settings.hotstore
    # version = final << 62 | as_of ms: a shift's final row beats every provisional one, later
    # figures beat earlier ones (docs/oee.md, "Live OEE").  The rolling hour has shift_start 0:
    # one row per machine and line, replaced as the hour moves.
    seconds = ",\n".join(
        f"    {name} Float64"
        for name in (
            "period_s", "planned_production_s", "run_s", "planned_stop_s", "unplanned_stop_s", "net_run_s",
            "fully_productive_s", "performance_loss_s", "quality_loss_s", "unknown_s",
        )
    )  # fmt: skip
    return f"""
CREATE TABLE IF NOT EXISTS {hs.database}.{table}
(
    scope        LowCardinality(String),
    site         LowCardinality(String),
    area         LowCardinality(String),
    line         LowCardinality(String),
    machine_id   LowCardinality(String),
    window_kind  LowCardinality(String),
    shift        LowCardinality(String),
    shift_start  DateTime64(3, 'UTC'),
    window_start DateTime64(3, 'UTC'),
    window_end   DateTime64(3, 'UTC'),
    as_of        DateTime64(3, 'UTC'),
    final        UInt8,
    machines     UInt32,
    availability Nullable(Float64),
    performance  Nullable(Float64),
    quality      Nullable(Float64),
    oee          Nullable(Float64),
{seconds},
    total_count  UInt64,
    good_count   UInt64,
    scrap_count  UInt64,
    ideal_cycle_s Nullable(Float64),
    nothing_planned UInt8,
    performance_above_one UInt8,
    availability_loss_s Map(LowCardinality(String), Float64),
    planned_stop_by_reason_s Map(LowCardinality(String), Float64),
    warnings     String,
    version      UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (scope, site, area, line, machine_id, window_kind, shift_start)
TTL toDateTime(window_end) + INTERVAL {hs.hot_retention_days} DAY
SETTINGS non_replicated_deduplication_window = {hs.dedup_window}
""".strip()


def twin_state_ddl(settings: Settings, table: str = TWIN_STATE_TABLE) -> str:
    """The stream inserts ``machine_id``, ``version`` and ``document`` (the TwinState JSON, the
    topic record's bytes); every other column is computed from the document by the hot store
    (``DEFAULT``): one definition of the row, no per-machine column building in the stream."""
    hs = settings.hotstore
    series = "Map(String, Tuple(value Nullable(Float64), quality String, ts Int64, stale Bool))"
    signals = f"JSONExtract(document, 'signals', '{series}')"

    def ms(path: str, nullable: bool = False) -> str:
        if nullable:
            return f"fromUnixTimestamp64Milli(JSONExtract(document, {path}, 'Nullable(Int64)'), 'UTC')"
        return f"fromUnixTimestamp64Milli(JSONExtractInt(document, {path}), 'UTC')"

    def per_signal(value: str) -> str:
        return f"mapApply((k, v) -> (k, {value}), {signals})"

    # version = the twin's update count for the machine (its TwinState.seq): FINAL keeps the newest.
    return f"""
CREATE TABLE IF NOT EXISTS {hs.database}.{table}
(
    machine_id     LowCardinality(String),
    version        UInt64,
    document       String,
    site           LowCardinality(String) DEFAULT JSONExtractString(document, 'site'),
    area           LowCardinality(String) DEFAULT JSONExtractString(document, 'area'),
    line           LowCardinality(String) DEFAULT JSONExtractString(document, 'line'),
    as_of          DateTime64(3, 'UTC') DEFAULT {ms("'source_ts'")},
    updated_at     DateTime64(3, 'UTC') DEFAULT {ms("'read_ts'")},
    stale          UInt8 DEFAULT JSONExtractBool(document, 'stale'),
    state          LowCardinality(Nullable(String)) DEFAULT JSONExtract(document, 'state', 'Nullable(String)'),
    reason         Nullable(String) DEFAULT JSONExtract(document, 'reason', 'Nullable(String)'),
    state_since    Nullable(DateTime64(3, 'UTC')) DEFAULT {ms("'state_since_ts'", nullable=True)},
    signal_value   Map(LowCardinality(String), Nullable(Float64)) DEFAULT {per_signal("tupleElement(v, 'value')")},
    signal_quality Map(LowCardinality(String), LowCardinality(String))
                   DEFAULT {per_signal("tupleElement(v, 'quality')")},
    signal_ts      Map(LowCardinality(String), DateTime64(3, 'UTC'))
                   DEFAULT {per_signal("fromUnixTimestamp64Milli(tupleElement(v, 'ts'), 'UTC')")},
    signal_stale   Map(LowCardinality(String), UInt8) DEFAULT {per_signal("toUInt8(tupleElement(v, 'stale'))")},
    shift          LowCardinality(String) DEFAULT JSONExtractString(document, 'shift'),
    shift_start    Nullable(DateTime64(3, 'UTC')) DEFAULT {ms("'shift_start_ts'", nullable=True)},
    parts_total    UInt64 DEFAULT JSONExtractUInt(document, 'parts_total'),
    parts_good     UInt64 DEFAULT JSONExtractUInt(document, 'parts_good'),
    parts_scrap    UInt64 DEFAULT JSONExtractUInt(document, 'parts_scrap'),
    oee            Nullable(Float64) DEFAULT JSONExtract(document, 'oee', 'oee', 'Nullable(Float64)'),
    availability   Nullable(Float64) DEFAULT JSONExtract(document, 'oee', 'availability', 'Nullable(Float64)'),
    performance    Nullable(Float64) DEFAULT JSONExtract(document, 'oee', 'performance', 'Nullable(Float64)'),
    quality        Nullable(Float64) DEFAULT JSONExtract(document, 'oee', 'quality', 'Nullable(Float64)'),
    open_alerts    UInt32 DEFAULT JSONLength(document, 'open_alerts'),
    failure_probability Nullable(Float64) DEFAULT JSONExtract(document, 'failure_probability', 'Nullable(Float64)')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY machine_id
TTL toDateTime(as_of) + INTERVAL {hs.hot_retention_days} DAY
SETTINGS non_replicated_deduplication_window = {hs.dedup_window}
""".strip()


ALERTS_TABLE = "alerts"
"""Every alert event (raise and clear) of the alert branches; one row per (alert_id, action) in ``FINAL``."""
#: Epoch-ms fields of the Alert contract stored as timestamps.
ALERT_TIME_FIELDS = (*MILLIS_FIELDS, "raised_at", "window_start", "window_end")
_ALERT_KEY = ("machine_id", "alert_id", "action")


def alert_columns() -> list[str]:
    """Column order of ``alerts``: the key, the rest of the Alert contract, ``event_ts`` (= ``source_ts``)."""
    names = contract_schema(ALERTS_STREAM.payload).names
    return [*_ALERT_KEY, *(n for n in names if n not in _ALERT_KEY), "event_ts"]


def alerts_ddl(settings: Settings, table: str = ALERTS_TABLE) -> str:
    """Columns from the Alert contract (as the raw tables' from theirs); one row per
    ``(alert_id, action)`` in ``FINAL``, the first conclusion of a replayed alert winning
    (``copy_rank`` = 2^63 - 1 - ``read_ts``)."""
    hs = settings.hotstore
    schema = contract_schema(ALERTS_STREAM.payload)
    columns = []
    for name in alert_columns():
        if name == "event_ts":
            kind = "DateTime64(3, 'UTC')"
        elif name in ALERT_TIME_FIELDS:
            kind = "Nullable(DateTime64(3, 'UTC'))" if schema.field(name).nullable else "DateTime64(3, 'UTC')"
        else:
            kind = _clickhouse_type(ALERTS_STREAM, schema.field(name))
        columns.append(f"    `{name}` {kind}")
    columns.append(f"    `{COPY_RANK}` UInt64")
    body = ",\n".join(columns)
    return f"""
CREATE TABLE IF NOT EXISTS {hs.database}.{table}
(
{body}
)
ENGINE = ReplacingMergeTree({COPY_RANK})
PARTITION BY toDate(event_ts)
ORDER BY ({", ".join(_ALERT_KEY)})
TTL toDateTime(event_ts) + INTERVAL {hs.hot_retention_days} DAY
SETTINGS non_replicated_deduplication_window = {hs.dedup_window}
""".strip()


#: The branches' tables, created and migrated by :func:`ensure_hot_tables`.
DERIVED_TABLES: tuple[DerivedTable, ...] = (
    DerivedTable(OEE_LIVE_TABLE, 1, oee_live_ddl),
    DerivedTable(TWIN_STATE_TABLE, 2, twin_state_ddl),
    DerivedTable(ALERTS_TABLE, 1, alerts_ddl),
)


def _migrate_derived_table(client, settings: Settings, derived: DerivedTable) -> None:
    """Bring a derived table of an older shape into the current one: the columns both shapes
    share are copied (new columns get their defaults), the tables swapped, the old dropped."""
    db, table = settings.hotstore.database, derived.name
    fresh = f"{table}__v{derived.version}"
    client.command(f"DROP TABLE IF EXISTS {db}.{fresh}")
    client.command(derived.create_sql(settings, fresh))
    old = {row[0] for row in client.query(f"DESCRIBE TABLE {db}.{table}").result_rows}
    shared = [row[0] for row in client.query(f"DESCRIBE TABLE {db}.{fresh}").result_rows if row[0] in old]
    columns = ", ".join(f"`{c}`" for c in shared)
    client.command(f"INSERT INTO {db}.{fresh} ({columns}) SELECT {columns} FROM {db}.{table}")
    client.command(f"EXCHANGE TABLES {db}.{table} AND {db}.{fresh}")
    client.command(f"DROP TABLE {db}.{fresh}")
    log.warning("migrated hot table %s.%s to schema v%d", db, table, derived.version)


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
    """Create the database, every stream's raw table, the window table and the branches'
    tables (:data:`DERIVED_TABLES`) if missing; migrate tables of an older shape (idempotent)."""
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
        for derived in DERIVED_TABLES:
            if derived.name in existing and existing[derived.name] != derived.comment:
                _migrate_derived_table(client, settings, derived)
            else:
                client.command(derived.create_sql(settings))
    finally:
        client.close()


__all__ = [
    "ALERTS_TABLE",
    "COPY_RANK",
    "DERIVED_TABLES",
    "OEE_LIVE_TABLE",
    "TELEMETRY_RAW_TABLE",
    "TELEMETRY_WINDOWS_TABLE",
    "TWIN_STATE_TABLE",
    "DerivedTable",
    "ensure_hot_tables",
    "raw_columns",
]
