"""ClickHouse's HTTP interface, as far as ``clickhouse-connect`` uses it, over :class:`ChdbEngine`.

One handler instance serves one keep-alive connection (HTTP/1.1).  Routes: ``GET /ping``
and ``GET|POST /`` with the statement in ``query=``, in the body, or in a multipart form
(``/metrics`` is on the metrics port, as on a ClickHouse server); ``INSERT ... FORMAT x``
bodies are streamed into chDB rather than parsed as SQL.  URL parameters that are not
HTTP-interface parameters are settings for this one statement, as on a ClickHouse server.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from plantstream.services.hotstore import auth, sql_text
from plantstream.services.hotstore.chdb_engine import DEFAULT_DATABASE, ChdbEngine, Outcome, Scope
from plantstream.services.hotstore.errors import NOT_IMPLEMENTED, STD_EXCEPTION, ClickHouseError
from plantstream.services.hotstore.form_data import parse_form_fields
from plantstream.services.hotstore.metrics import HotstoreMetrics
from plantstream.services.hotstore.request_body import BodyReader
from plantstream.services.hotstore.sessions import SessionStore

log = logging.getLogger(__name__)

# URL parameters of the HTTP interface itself; everything else (but param_*) is a setting.
HTTP_PARAMETERS = frozenset({
    "query", "database", "default_format", "session_id", "session_timeout", "session_check", "query_id",
    "compress", "decompress", "user", "password", "quota_key", "client_protocol_version", "buffer_size",
    "wait_end_of_query", "role", "stacktrace", "with_stacktrace", "max_result_bytes_in_buffer",
})  # fmt: skip
# Real settings about HTTP transport that mean nothing here (responses are never compressed,
# no progress headers are sent); applying them to chDB would only churn SET statements.
IGNORED_TRANSPORT_SETTINGS = frozenset({
    "enable_http_compression", "http_zlib_compression_level", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "http_wait_end_of_query", "http_response_buffer_size", "add_http_cors_header",
    "http_native_compression_disable_checksumming_on_decompress",
})  # fmt: skip

QUERY_BODY_LIMIT = 256 << 20  # a non-INSERT statement is read whole; refuse absurd sizes
INSERT_HEAD_LIMIT = 1 << 20  # how far into a body to look for ``INSERT ... FORMAT name``
INSERT_PREBUFFER = 64 << 20  # insert bodies up to this size are read before taking the chDB lock
APPEND_PIECE = 8 << 20  # join small network chunks into pieces of about this size for chDB
IDLE_KEEPALIVE_S = 600.0

_CONTENT_TYPES = {
    "TabSeparated": "text/tab-separated-values; charset=UTF-8",
    "TSV": "text/tab-separated-values; charset=UTF-8",
    "CSV": "text/csv; charset=UTF-8; header=absent",
    "JSON": "application/json; charset=UTF-8",
    "JSONCompact": "application/json; charset=UTF-8",
    "JSONEachRow": "application/x-ndjson; charset=UTF-8",
}


class HotstoreHTTPServer(ThreadingHTTPServer):
    """A thread per connection; the engine serialises chDB, so threads only wait on I/O."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        engine: ChdbEngine,
        credentials: auth.Credentials,
        metrics: HotstoreMetrics,
    ) -> None:
        self.engine = engine
        self.credentials = credentials
        self.metrics = metrics
        self.sessions = SessionStore()
        super().__init__(address, HotstoreRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up is routine; anything else is logged with its traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("connection from %s ended: %s", client_address, type(exc).__name__)
        else:
            log.exception("unhandled error on a connection from %s", client_address)


class HotstoreRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "plantstream-hotstore"
    timeout = IDLE_KEEPALIVE_S
    server: HotstoreHTTPServer
    _headers_sent = False

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY, Nagle + delayed ACK add ~40 ms to every small request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: request lines carry URL parameters, which may include a password."""

    # -- routes ------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/ping", "/replicas_status"):
            self._timed("ping", lambda: self._send_plain(200, b"Ok.\n"))
        elif path == "/":
            self._serve_statement()
        else:
            self._drain_and_404()

    def do_POST(self) -> None:
        if urlsplit(self.path).path == "/":
            self._serve_statement()
        else:
            self._drain_and_404()

    def _drain_and_404(self) -> None:
        self.close_connection = True
        self._timed("other", lambda: self._send_plain(404, b"There is no handle " + self.path.encode() + b"\n"))

    # -- statements --------------------------------------------------------------------

    def _serve_statement(self) -> None:
        started = time.perf_counter()
        self._headers_sent = False
        metrics = self.server.metrics
        kind = "query"
        body = BodyReader(
            self.rfile,
            int(self.headers.get("Content-Length") or 0),
            "chunked" in self.headers.get("Transfer-Encoding", "").lower(),
            self.headers.get("Content-Encoding"),
        )
        params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
        query_id = params.get("query_id") or str(uuid.uuid4())
        try:
            auth.check(self.server.credentials, self.headers, params)
            if params.get("decompress", "0").lower() not in ("0", "false"):
                raise ClickHouseError.own(NOT_IMPLEMENTED, "decompress=1 (ClickHouse-compressed request bodies)")
            content_type = self.headers.get("Content-Type", "")
            if content_type.lower().startswith("multipart/form-data"):
                params.update(parse_form_fields(content_type, body.read_all(QUERY_BODY_LIMIT)))
                outcome = self._execute(params.get("query", ""), params)
            else:
                kind, outcome = self._execute_from_stream(params, body)
            if kind == "insert":
                metrics.inserted_rows.inc(outcome.written_rows)
            self._send_outcome(outcome, query_id, params)
        except ClickHouseError as exc:
            metrics.errors.labels(kind).inc()
            log.info("request failed: code %d (%s)", exc.code, exc.name)
            log.debug("error text: %s", exc.text)
            self._send_error(exc, query_id, body)
        except (ConnectionError, TimeoutError) as exc:
            metrics.errors.labels(kind).inc()
            log.info("client connection lost: %s", type(exc).__name__)
            self.close_connection = True
        except Exception as exc:
            metrics.errors.labels(kind).inc()
            log.exception("internal error while serving a statement")
            if self._headers_sent:
                self.close_connection = True  # too late for an error response; the client sees a cut body
                return
            self._send_error(ClickHouseError.own(STD_EXCEPTION, f"{type(exc).__name__}: {exc}"), query_id, body)
        finally:
            metrics.requests.labels(kind).inc()
            metrics.duration.labels(kind).observe(time.perf_counter() - started)

    def _execute_from_stream(self, params: dict[str, str], body: BodyReader) -> tuple[str, Outcome]:
        """Route a plain (non-multipart) request: stream an INSERT's data, or read the SQL."""
        chunks = iter(body)
        query_param = params.get("query")
        if query_param is not None:
            head_text = query_param.encode()
            first = next(chunks, b"")
            if first:
                head_text += b"\n"
            if sql_text.first_keyword(head_text) == "INSERT":
                head = sql_text.split_insert_head(head_text, complete=True)
                if head is not None:
                    return "insert", self._insert(head, head_text[head.data_offset :] + first, chunks, params)
            sql = head_text + first + b"".join(chunks)
            return "query", self._execute(sql.decode(), params)

        head_text = b""
        ended = False
        while not ended and len(head_text) < INSERT_HEAD_LIMIT:
            chunk = next(chunks, None)
            if chunk is None:
                ended = True
            else:
                head_text += chunk
            if sql_text.first_keyword(head_text[:4096]) not in ("", "INSERT"):
                break  # not an INSERT: the rest is SQL text
            head = sql_text.split_insert_head(head_text, complete=ended)
            if head is not None:
                return "insert", self._insert(head, head_text[head.data_offset :], chunks, params)
        rest = body.read_all(QUERY_BODY_LIMIT - len(head_text)) if not ended else b""
        return "query", self._execute((head_text + rest).decode(), params)

    def _scope(self, params: dict[str, str]) -> tuple[Scope, Any]:
        session = None
        session_id = params.get("session_id")
        if session_id:
            timeout = params.get("session_timeout")
            session = self.server.sessions.get(session_id, float(timeout) if timeout else None)
        request_settings = {
            name: value
            for name, value in params.items()
            if name not in HTTP_PARAMETERS and name not in IGNORED_TRANSPORT_SETTINGS and not name.startswith("param_")
        }
        database = params.get("database") or (session.database if session else None) or DEFAULT_DATABASE
        scope = Scope(dict(session.settings) if session else {}, request_settings, database)
        return scope, session

    def _execute(self, sql: str, params: dict[str, str]) -> Outcome:
        scope, session = self._scope(params)
        query_params = {name[6:]: value for name, value in params.items() if name.startswith("param_")}
        fmt = params.get("default_format") or "TabSeparated"
        try:
            return self.server.engine.execute(sql, fmt, query_params, scope, session)
        finally:
            if session is not None:
                self.server.sessions.touch(session)

    def _insert(
        self, head: sql_text.InsertHead, first: bytes, rest: Iterator[bytes], params: dict[str, str]
    ) -> Outcome:
        # Read up to INSERT_PREBUFFER before taking the chDB lock, so that a client sending
        # slowly does not hold every other client up for the whole transfer.
        buffered = [first] if first else []
        size = len(first)
        more = size < INSERT_PREBUFFER
        while more:
            chunk = next(rest, None)
            if chunk is None:
                break
            buffered.append(chunk)
            size += len(chunk)
            more = size < INSERT_PREBUFFER
        scope, session = self._scope(params)
        try:
            return self.server.engine.insert(head.statement, head.data_format, _pieces(buffered, rest), scope)
        finally:
            if session is not None:
                self.server.sessions.touch(session)

    # -- responses ---------------------------------------------------------------------

    def _send_outcome(self, outcome: Outcome, query_id: str, params: dict[str, str]) -> None:
        self.send_response(200)
        fmt = outcome.result_format
        self.send_header("Content-Type", _CONTENT_TYPES.get(fmt or "", "application/octet-stream"))
        self.send_header("Content-Length", str(len(outcome.body)))
        self.send_header("X-ClickHouse-Query-Id", query_id)
        if fmt:
            self.send_header("X-ClickHouse-Format", fmt)
        self.send_header("X-ClickHouse-Timezone", params.get("session_timezone") or self.server.engine.timezone)
        self.send_header("X-ClickHouse-Summary", json.dumps(outcome.summary(), separators=(",", ":")))
        self.send_header("X-ClickHouse-Server-Display-Name", "plantstream-hotstore")
        self._headers_sent = True
        self.end_headers()
        if outcome.body:
            self.wfile.write(outcome.body)

    def _send_error(self, exc: ClickHouseError, query_id: str, body: BodyReader) -> None:
        if not body.exhausted:
            self.close_connection = True  # the unread rest of the body would be taken for the next request
        payload = exc.body(self.server.engine.version)
        self.send_response(exc.http_status)
        self.send_header("Content-Type", "text/plain; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("X-ClickHouse-Exception-Code", str(exc.code))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _send_plain(self, status: int, payload: bytes, content_type: str = "text/plain; charset=UTF-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _timed(self, kind: str, send: Any) -> None:
        started = time.perf_counter()
        try:
            send()
        finally:
            self.server.metrics.requests.labels(kind).inc()
            self.server.metrics.duration.labels(kind).observe(time.perf_counter() - started)


def _pieces(buffered: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    """The buffered chunks and then the rest of the body, joined into pieces of ~APPEND_PIECE."""
    pending: list[bytes] = []
    size = 0
    for chunk in _chain(buffered, rest):
        pending.append(chunk)
        size += len(chunk)
        if size >= APPEND_PIECE:
            yield pending[0] if len(pending) == 1 else b"".join(pending)
            pending, size = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else b"".join(pending)


def _chain(buffered: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    queue = deque(buffered)
    buffered.clear()
    while queue:
        yield queue.popleft()  # release buffered memory as it is handed over
    yield from rest
