"""Checksums the hot store and the lake compute identically, and content checksums of lake tables.

Archival compares a hot-store partition with the lake before dropping it, so the two
sides must hash an event the same way in two engines.  The event's identity is
``(machine_id, seq)``; its hash is the first 8 bytes of ``MD5(machine_id || ':' || seq)``
read as a little-endian unsigned 64-bit integer:

* ClickHouse: ``reinterpretAsUInt64(MD5(concat(machine_id, ':', toString(seq))))``
* DuckDB: ``md5_number_upper(machine_id || ':' || CAST(seq AS VARCHAR))``
* Python (the reference the tests pin both against): ``int.from_bytes(md5(key)[:8], "little")``

Why MD5 and not ``cityHash64``: DuckDB (the lake's engine) has no cityHash64 and Python
has no built-in one; MD5 exists everywhere with one definition.  Why ``':'``: ``seq`` is
decimal digits, so splitting at the last ``':'`` recovers the pair: the key string is
injective.  A partition's checksum is the row count and the *sum* of the row hashes
modulo 2^64 (ClickHouse ``sumWithOverflow``): order-independent, and unlike XOR a
duplicated row changes it.

Backfills prove idempotency with :func:`content_checksum`: every column of every row
(the row as DuckDB prints it, MD5-hashed, summed modulo 2^64), so two tables with the
same rows in other files or another order have the same checksum.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import duckdb

MOD_64 = 1 << 64

#: The per-row key hash as ClickHouse SQL (columns ``machine_id`` and ``seq``).
KEY_HASH_CLICKHOUSE = "reinterpretAsUInt64(MD5(concat(machine_id, ':', toString(seq))))"
#: The same hash as DuckDB SQL.
KEY_HASH_DUCKDB = "md5_number_upper(machine_id || ':' || CAST(seq AS VARCHAR))"


@dataclass(frozen=True, slots=True)
class KeyChecksum:
    """Rows and the sum of their key hashes (mod 2^64) for one partition of one table."""

    rows: int
    checksum: int

    def as_dict(self) -> dict[str, int | str]:
        # The checksum as text: JSON metadata viewers round integers above 2^53.
        return {"rows": self.rows, "checksum": str(self.checksum)}


EMPTY = KeyChecksum(0, 0)


def key_hash(machine_id: str, seq: int) -> int:
    """The reference implementation of the key hash (what both engines must agree with)."""
    digest = hashlib.md5(f"{machine_id}:{seq}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "little")


def reference_checksum(keys: list[tuple[str, int]]) -> KeyChecksum:
    return KeyChecksum(len(keys), sum(key_hash(m, s) for m, s in keys) % MOD_64)


def lake_key_checksum(rows: Any) -> KeyChecksum:
    """Checksum of Arrow data (a table or dataset with ``machine_id`` and ``seq``) computed in DuckDB."""
    with duckdb.connect() as con:
        con.register("keys", rows)
        count, total = con.execute(
            f"SELECT count(*), coalesce(sum({KEY_HASH_DUCKDB}), 0) % {MOD_64} FROM keys"
        ).fetchone()  # type: ignore[misc]
    return KeyChecksum(int(count), int(total))


def hot_key_checksums_sql(database: str, table: str) -> str:
    """Per partition id: rows and key checksum of ``table`` in the deduplicated view (``FINAL``).

    ``FINAL`` because an event written twice (a replay) is one event: the lake holds it once.
    The partition ids to read are bound as ``{ids:Array(String)}``.
    """
    return (
        f"SELECT _partition_id AS partition_id, count() AS rows, sumWithOverflow({KEY_HASH_CLICKHOUSE}) AS checksum "
        f"FROM {database}.{table} FINAL WHERE _partition_id IN {{ids:Array(String)}} GROUP BY partition_id"
    )


def hot_key_checksums(client: Any, database: str, table: str, partition_ids: list[str]) -> dict[str, KeyChecksum]:
    """:func:`hot_key_checksums_sql` run through a ``clickhouse_connect`` client."""
    if not partition_ids:
        return {}
    result = client.query(hot_key_checksums_sql(database, table), parameters={"ids": partition_ids})
    return {str(pid): KeyChecksum(int(rows), int(total)) for pid, rows, total in result.result_rows}


def content_checksum(data: Any) -> KeyChecksum:
    """Rows and an order-independent checksum of every column of ``data`` (Arrow table or dataset).

    Why the printed row: it covers every type (maps, lists, NaN, NULL) with one rule and
    is stable across processes, which ``hash()`` of DuckDB only promises within a version.
    """
    with duckdb.connect() as con:
        con.register("content", data)
        count, total = con.execute(
            f"SELECT count(*), coalesce(sum(md5_number_upper(CAST(c AS VARCHAR))), 0) % {MOD_64} FROM content c"
        ).fetchone()  # type: ignore[misc]
    return KeyChecksum(int(count), int(total))
