"""The one chDB connection behind the service, and the lock that serialises it.

chDB runs one statement at a time per connection (concurrent calls fail or lose rows),
and a data path can be opened by one process only, so this process opens it once and
every HTTP thread goes through :class:`ChdbEngine` under a single lock.

The connection has one set of settings and one current database, while ClickHouse keeps
them per HTTP session.  Before each statement the engine moves the connection to the
caller's :class:`Scope` (session settings + the request's URL settings + database),
issuing only the ``SET``/``USE`` that differ from what is already applied, so clients
never see each other's ``SET`` and the common case costs nothing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chdb

from plantstream.services.hotstore import sql_text
from plantstream.services.hotstore.errors import ABORTED, BAD_ARGUMENTS, ClickHouseError
from plantstream.services.hotstore.native_header import empty_native_block
from plantstream.services.hotstore.sessions import SessionState

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "default"
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# ``database`` shows up in system.settings after USE; it is tracked as the current database instead.
_NOT_A_SESSION_SETTING = frozenset({"database"})


@dataclass(frozen=True)
class Scope:
    """What the connection must look like for one request's statement."""

    session_settings: Mapping[str, str] = field(default_factory=dict)
    request_settings: Mapping[str, str] = field(default_factory=dict)
    database: str = DEFAULT_DATABASE

    def settings(self) -> dict[str, str]:
        return {**self.session_settings, **self.request_settings}


@dataclass
class Outcome:
    """A finished statement: the response body and the figures for X-ClickHouse-Summary."""

    body: bytes | memoryview = b""
    result_format: str | None = None
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    elapsed_s: float = 0.0
    keepalive: Any = None  # the chDB result that owns ``body``'s memory

    def summary(self) -> dict[str, str]:
        """ClickHouse's X-ClickHouse-Summary fields (it sends the numbers as strings)."""
        return {
            "read_rows": str(self.read_rows),
            "read_bytes": str(self.read_bytes),
            "written_rows": str(self.written_rows),
            "written_bytes": str(self.written_bytes),
            "total_rows_to_read": "0",
            "result_rows": str(self.result_rows),
            "result_bytes": str(len(self.body)),
            "elapsed_ns": str(int(self.elapsed_s * 1e9)),
        }


class ChdbEngine:
    """Owns the chDB connection of one data directory; every call is serialised."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = chdb.connect(str(data_dir))
        except Exception as exc:
            raise ClickHouseError.from_chdb(exc) from exc
        self._lock = threading.Lock()
        self._closed = False
        version, timezone = self._text("SELECT version(), timezone()").rstrip("\n").split("\t")
        self.version: str = version
        self.timezone: str = timezone
        self._baseline = self._read_settings("changed")
        self._applied: dict[str, str] = {}
        self._applied_database = self._text("SELECT currentDatabase()").strip()

    # -- public API (each call takes the lock) -------------------------------------------

    def execute(
        self,
        sql: str,
        default_format: str,
        params: Mapping[str, str],
        scope: Scope,
        session: SessionState | None,
    ) -> Outcome:
        """Run one statement and return its output in the requested format."""
        keyword = sql_text.first_keyword(sql)
        changes_settings = keyword == "SET" and sql_text.is_session_set(sql)
        result_format = sql_text.trailing_format(sql) or default_format
        started = time.perf_counter()
        with self._locked():
            # A SET changes the session, not the request: apply only what the session had.
            wanted = dict(scope.session_settings) if changes_settings else scope.settings()
            self._enter(wanted, scope.database)
            succeeded = False
            try:
                result = self._query(sql, default_format, params)
                succeeded = True
            finally:
                if changes_settings:  # also after a failure: a SET may apply part of its list
                    self._applied = self._session_overrides()
                    if session is not None:
                        session.settings = dict(self._applied)
                if keyword == "USE":
                    self._applied_database = self._text("SELECT currentDatabase()").strip()
                    if session is not None and succeeded:
                        session.database = self._applied_database
            body: bytes | memoryview = result.get_memview().view() if result.size() else b""
            if not body and result_format == "Native" and keyword in sql_text.DESCRIBABLE_KEYWORDS:
                body = self._empty_native_header(sql, params)
        produces_result = bool(body) or keyword in sql_text.RESULT_KEYWORDS
        return Outcome(
            body=body,
            result_format=result_format if produces_result else None,
            read_rows=result.rows_read(),
            read_bytes=result.bytes_read(),
            written_rows=result.rows_written(),
            written_bytes=result.bytes_written(),
            elapsed_s=time.perf_counter() - started,
            keepalive=result,
        )

    def insert(self, statement: str, data_format: str, chunks: Iterable[bytes], scope: Scope) -> Outcome:
        """Stream FORMAT-encoded ``chunks`` into ``statement`` (an INSERT without FORMAT clause).

        The lock is held while ``chunks`` is consumed: chDB accepts no other statement while
        a streaming insert is open.  The caller pre-reads small bodies so that a slow client
        holds the lock only for bodies too large to buffer.
        """
        started = time.perf_counter()
        with self._locked():
            self._enter(scope.settings(), scope.database)
            try:
                inserter = self._conn.send_insert(statement, data_format)
            except Exception as exc:
                raise ClickHouseError.from_chdb(exc) from exc
            try:
                for chunk in chunks:
                    inserter.append(chunk)
                done = inserter.finish()
            except BaseException as exc:
                try:
                    inserter.cancel()
                except Exception:
                    log.debug("cancelling a failed insert failed too", exc_info=True)
                if isinstance(exc, ClickHouseError) or not isinstance(exc, Exception):
                    raise
                raise ClickHouseError.from_chdb(exc) from exc
        return Outcome(
            written_rows=done.rows_written,
            written_bytes=done.bytes_written,
            elapsed_s=time.perf_counter() - started,
        )

    def close(self, wait_s: float = 1.5) -> bool:
        """Close chDB (flushes its state) once the running statement, if any, has finished.

        Returns False if a statement still held the connection after ``wait_s``; the
        connection is then left open (committed MergeTree parts are already on disk).
        """
        if not self._lock.acquire(timeout=wait_s):
            return False
        try:
            if not self._closed:
                self._closed = True
                self._conn.close()
            return True
        finally:
            self._lock.release()

    # -- internals (caller holds the lock) -----------------------------------------------

    def _locked(self) -> _EngineLock:
        return _EngineLock(self)

    def _query(self, sql: str, fmt: str, params: Mapping[str, str] | None = None) -> Any:
        try:
            return self._conn.query(sql, fmt, params=dict(params) if params else None)
        except Exception as exc:
            raise ClickHouseError.from_chdb(exc) from exc

    def _text(self, sql: str) -> str:
        return bytes(self._query(sql, "TabSeparated").bytes()).decode()

    def _read_settings(self, where: str) -> dict[str, str]:
        raw = self._query(f"SELECT name, value FROM system.settings WHERE {where}", "JSONCompact").bytes()
        rows = json.loads(raw)["data"]
        return {name: value for name, value in rows if name not in _NOT_A_SESSION_SETTING}

    def _session_overrides(self) -> dict[str, str]:
        """The settings that differ from the service's baseline right now."""
        names = ", ".join(sql_text.quote_string(n) for n in self._baseline) or "''"
        current = self._read_settings(f"changed OR name IN ({names})")
        return {k: v for k, v in current.items() if self._baseline.get(k) != v}

    def _enter(self, wanted: Mapping[str, str], database: str) -> None:
        """Bring the connection's settings and current database to ``wanted``/``database``."""
        changes = []
        for name in self._applied.keys() - wanted.keys():
            baseline = self._baseline.get(name)
            changes.append(f"{name} = {'DEFAULT' if baseline is None else sql_text.quote_string(baseline)}")
        for name, value in wanted.items():
            if self._applied.get(name) != value:
                if not _SETTING_NAME.match(name):
                    raise ClickHouseError.own(BAD_ARGUMENTS, f"Invalid setting name {name!r}")
                changes.append(f"{name} = {sql_text.quote_string(value)}")
        if changes:
            try:
                self._query("SET " + ", ".join(changes), "TabSeparated")
            except ClickHouseError:
                self._applied = self._session_overrides()  # a failed SET may have applied part of it
                raise
            self._applied = dict(wanted)
        if database != self._applied_database:
            self._query(f"USE {sql_text.quote_identifier(database)}", "TabSeparated")
            self._applied_database = database

    def _empty_native_header(self, sql: str, params: Mapping[str, str]) -> bytes:
        inner = sql_text.without_trailing_format(sql)
        try:
            raw = self._query(f"DESCRIBE ({inner}) FORMAT JSONCompact", "JSONCompact", params).bytes()
        except ClickHouseError as exc:
            log.debug("could not describe an empty result (code %s); sending no header", exc.code)
            return b""
        columns = [(row[0], row[1]) for row in json.loads(raw)["data"]]
        return empty_native_block(columns)


class _EngineLock:
    """The engine lock, refusing work once the engine is closed (shutdown in progress)."""

    def __init__(self, engine: ChdbEngine) -> None:
        self._engine = engine

    def __enter__(self) -> None:
        self._engine._lock.acquire()
        if self._engine._closed:
            self._engine._lock.release()
            raise ClickHouseError.own(ABORTED, "The hot store is shutting down")

    def __exit__(self, *exc: object) -> None:
        self._engine._lock.release()
