"""The key hash is the same in ClickHouse (the hot store), DuckDB (the lake) and Python."""

from __future__ import annotations

import pyarrow as pa
import pytest

from plantstream.assets.cold.checksums import (
    KEY_HASH_CLICKHOUSE,
    content_checksum,
    hot_key_checksums,
    key_hash,
    lake_key_checksum,
    reference_checksum,
)
from plantstream.connect.hotstore import ensure_database, hotstore_client

# Keys that would trip a careless hash: unicode, the separator inside the id, extreme seqs.
KEYS = [
    ("cnc-01", 0),
    ("cnc-01", 1),
    ("cnc-1", 10),  # "cnc-1:10" must differ from ("cnc-11", 0) and ("cnc-1", 1) + "0"
    ("cnc-11", 0),
    ("presse-ä/ü-ß", 42),
    ("machine:with:colons", 7),
    ("m", 2**63 - 1),
    ("東京-7", 123_456_789_012),
]


def test_duckdb_and_python_agree_and_the_sum_wraps_modulo_2_64() -> None:
    table = pa.table({"machine_id": [m for m, _ in KEYS], "seq": pa.array([s for _, s in KEYS], pa.int64())})
    lake = lake_key_checksum(table)
    reference = reference_checksum(KEYS)
    assert lake == reference
    assert sum(key_hash(m, s) for m, s in KEYS) >= 2**64  # the wrap is exercised, not assumed
    assert len({key_hash(m, s) for m, s in KEYS}) == len(KEYS)


def test_clickhouse_computes_the_same_hash_per_row_and_per_partition(platform_settings, unique_name) -> None:
    database = unique_name("ck", sep="_")
    settings = platform_settings.model_copy(
        update={"hotstore": platform_settings.hotstore.model_copy(update={"database": database})}
    )
    ensure_database(settings)
    client = hotstore_client(settings)
    try:
        client.command(
            f"CREATE TABLE {database}.k (machine_id LowCardinality(String), seq UInt64, d Date) "
            "ENGINE = ReplacingMergeTree PARTITION BY d ORDER BY (machine_id, seq)"
        )
        rows = [(m, s, "2026-01-01" if i % 2 else "2026-01-02") for i, (m, s) in enumerate(KEYS)]
        client.insert(
            "k", [(m, s, pa.scalar(d).cast(pa.date32()).as_py()) for m, s, d in rows], ["machine_id", "seq", "d"]
        )
        client.insert(
            "k",
            [(KEYS[0][0], KEYS[0][1], pa.scalar("2026-01-02").cast(pa.date32()).as_py())],
            ["machine_id", "seq", "d"],
        )  # a replay
        per_row = dict(
            ((m, s), h)
            for m, s, h in client.query(f"SELECT machine_id, seq, {KEY_HASH_CLICKHOUSE} FROM {database}.k").result_rows
        )
        assert per_row == {(m, s): key_hash(m, s) for m, s in KEYS}
        by_partition = hot_key_checksums(client, database, "k", ["20260101", "20260102"])
    finally:
        client.close()
    for pid, day in (("20260101", "2026-01-01"), ("20260102", "2026-01-02")):
        keys = [(m, s) for m, s, d in rows if d == day]
        assert by_partition[pid] == reference_checksum(keys), pid  # FINAL: the replayed row counts once


@pytest.mark.parametrize("order", [None, "reversed"])
def test_content_checksum_ignores_row_order_and_files_but_not_content(order) -> None:
    table = pa.table(
        {
            "machine_id": ["a", "b", "c"],
            "value": [1.5, float("nan"), None],
            "tags": pa.array([[("k", "v")], [], [("x", "y")]], pa.map_(pa.string(), pa.string())),
        }
    )
    other = table.take([2, 1, 0]) if order else table
    assert content_checksum(other) == content_checksum(pa.concat_tables([table.slice(0, 1), table.slice(1)]))
    changed = table.set_column(1, "value", pa.array([1.5, float("nan"), 0.0]))
    assert content_checksum(changed) != content_checksum(table)
    doubled = pa.concat_tables([table, table.slice(0, 1)])
    assert content_checksum(doubled).checksum != content_checksum(table).checksum
