"""DDL of the hot store's telemetry tables (ClickHouse; chDB-backed locally).

Both tables are ReplacingMergeTrees keyed by the identity of what they hold, so a row
written twice (a replay after a crash, batches cut differently) collapses into one in
the deduplicated view (``SELECT ... FROM t FINAL``).  ``non_replicated_deduplication_window``
lets ClickHouse drop an insert it has already seen by its ``insert_deduplication_token``
(the fast path; on a replicated production table the setting is
``replicated_deduplication_window``).
"""

from __future__ import annotations

from plantstream.connect.hotstore import ensure_database, hotstore_client
from plantstream.settings import Settings

TELEMETRY_RAW_TABLE = "telemetry_raw"
"""Every valid telemetry event; one row per (machine_id, seq) in ``FINAL``."""

TELEMETRY_WINDOWS_TABLE = "telemetry_windows"
"""Window aggregates; one row per (machine_id, signal, window_seconds, window_start) in ``FINAL``."""


def telemetry_raw_ddl(settings: Settings) -> str:
    hs = settings.hotstore
    return f"""
CREATE TABLE IF NOT EXISTS {hs.database}.{TELEMETRY_RAW_TABLE}
(
    machine_id      LowCardinality(String),
    seq             UInt64,
    signal          LowCardinality(String),
    value           Nullable(Float64),
    unit            LowCardinality(String),
    quality         LowCardinality(String),
    site            LowCardinality(String),
    area            LowCardinality(String),
    line            LowCardinality(String),
    v               UInt16,
    event_ts        DateTime64(3, 'UTC'),
    source_ts       Nullable(DateTime64(3, 'UTC')),
    read_ts         DateTime64(3, 'UTC'),
    ingest_ts       DateTime64(3, 'UTC'),
    kafka_partition Int32,
    kafka_offset    Int64
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(event_ts)
ORDER BY (machine_id, seq)
TTL toDateTime(event_ts) + INTERVAL {hs.hot_retention_days} DAY
SETTINGS non_replicated_deduplication_window = {hs.dedup_window}
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


def ensure_hot_tables(settings: Settings) -> None:
    """Create the database and the telemetry tables if missing (idempotent)."""
    ensure_database(settings)
    client = hotstore_client(settings)
    try:
        client.command(telemetry_raw_ddl(settings))
        client.command(telemetry_windows_ddl(settings))
    finally:
        client.close()
