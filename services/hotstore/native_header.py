"""The Native header block that chDB leaves out of an empty result.

A ClickHouse server answers a 0-row ``FORMAT Native`` query with one block that has the
column names and types and no rows; chDB returns 0 bytes, and ``clickhouse-connect``'s
``query_df`` then yields a (0, 0) frame.  The service describes the query and sends the
block itself.  Layout (client protocol revision 0, which is what the client negotiates
with this service): varint column count, varint row count (0), then per column a
length-prefixed name and type; a block with no rows carries no column data.
"""

from __future__ import annotations

from collections.abc import Sequence


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return _varint(len(data)) + data


def empty_native_block(columns: Sequence[tuple[str, str]]) -> bytes:
    """A Native block with the given (name, type) columns and zero rows."""
    parts = [_varint(len(columns)), _varint(0)]
    for name, type_name in columns:
        parts.append(_string(name))
        parts.append(_string(type_name))
    return b"".join(parts)
