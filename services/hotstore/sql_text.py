"""Just enough SQL text handling to route a request; ClickHouse itself parses everything.

The service has to know a few things before it runs a statement: whether it is an
INSERT whose data follows a ``FORMAT`` clause (so the data can be streamed into chDB
instead of parsed as SQL), whether it changes session state (``SET``/``USE``) and
whether it produces a result set.  Nothing here rewrites user SQL except the trailing
``FORMAT`` clause that is stripped to ``DESCRIBE`` an empty result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LEADING_NOISE = re.compile(rb"(?:\s+|--[^\n]*(?:\n|$)|#![^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_FIRST_WORD = re.compile(rb"[A-Za-z_]+")
# ``FORMAT name`` that ends the INSERT statement; the data starts right after it.
_INSERT_FORMAT = re.compile(rb"\bFORMAT[ \t\r\n]+([A-Za-z0-9_]+)", re.IGNORECASE)
_TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+([A-Za-z0-9_]+)\s*;?\s*$", re.IGNORECASE)
_SET_TARGETS_ROLE = re.compile(r"^\s*SET\s+(?:DEFAULT\s+)?ROLE\b", re.IGNORECASE)

RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "VALUES"})
# Statements whose empty Native result can be described with ``DESCRIBE (query)``.
DESCRIBABLE_KEYWORDS = frozenset({"SELECT", "WITH"})


def first_keyword(sql: bytes | str) -> str:
    """The statement's first keyword in upper case ('' if there is none), skipping comments."""
    data = sql.encode() if isinstance(sql, str) else sql
    start = _LEADING_NOISE.match(data)
    pos = start.end() if start else 0
    word = _FIRST_WORD.match(data, pos)
    return word.group(0).decode().upper() if word else ""


def is_session_set(sql: str) -> bool:
    """A ``SET name = value`` statement (not ``SET ROLE``) that changes session settings."""
    return first_keyword(sql) == "SET" and not _SET_TARGETS_ROLE.match(sql)


def trailing_format(sql: str) -> str | None:
    """The format named by a ``FORMAT`` clause at the end of the statement, if any."""
    match = _TRAILING_FORMAT.search(sql)
    return match.group(1) if match else None


def without_trailing_format(sql: str) -> str:
    return _TRAILING_FORMAT.sub("", sql).rstrip().rstrip(";")


@dataclass(frozen=True)
class InsertHead:
    """An ``INSERT ... FORMAT name`` statement split from the data that follows it."""

    statement: str  # without the FORMAT clause, as chDB's send_insert wants it
    data_format: str
    data_offset: int  # where the data starts in the text the head was found in


def split_insert_head(text: bytes, complete: bool) -> InsertHead | None:
    """Find the end of an ``INSERT ... FORMAT name`` statement at the start of ``text``.

    ``complete`` says whether ``text`` is everything there is; when it is not, a format
    name that touches the end of ``text`` may still be growing, so the caller must read
    more first (``None`` is returned).  Data starts after spaces/tabs, an optional ``\\r``
    and one optional newline, as in ClickHouse's ParserInsertQuery.
    """
    match = _INSERT_FORMAT.search(text)
    if match is None:
        return None
    end = match.end()
    if end == len(text) and not complete:
        return None
    while end < len(text) and text[end] in b" \t\f":
        end += 1
    if end < len(text) and text[end] == ord("\r"):
        end += 1
    if end < len(text) and text[end] == ord("\n"):
        end += 1
    statement = text[: match.start()].decode("utf-8").strip()
    return InsertHead(statement=statement, data_format=match.group(1).decode(), data_offset=end)


def quote_string(value: str) -> str:
    """A ClickHouse single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
