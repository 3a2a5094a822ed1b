"""The one ``/metrics`` + ``/healthz`` HTTP server of every long-running component.

Why one server: before it, the gateway had its own, the stream used
``prometheus_client.start_http_server`` (no health endpoint, one global registry) and the
hot store answered ``/metrics`` on its ClickHouse port.  Now every component serves its
own :class:`~prometheus_client.CollectorRegistry` the same way, on the port
:func:`plantstream.observability.ports.metrics_port` assigns, and reports health as a
small JSON document: ``{"ok": bool, ...}`` with 200 when ok, else 503 (what load
balancers, Kubernetes probes and the supervisor's health checks understand).

Requests are served on daemon threads; a scrape renders the registry on the request
thread, so collectors must be cheap (the platform exporter computes in the background
and only publishes on scrape).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from plantstream.observability.ports import metrics_host, metrics_port
from plantstream.settings import Settings

log = logging.getLogger(__name__)

Health = Callable[[], dict[str, Any]]


def _always_ok() -> dict[str, Any]:
    return {"ok": True}


class MetricsServer:
    """``GET /metrics`` (Prometheus text or OpenMetrics, as the scraper asks) and ``GET /healthz``.

    ``port=0`` binds any free port (tests); :attr:`port` tells which.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        port: int,
        host: str = "127.0.0.1",
        health: Health | None = None,
        name: str = "metrics",
    ) -> None:
        self.registry = registry
        check = health or _always_ok

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
                    body, status = encoder(registry), 200
                elif path == "/healthz":
                    try:
                        doc = check()
                    except Exception as exc:  # a failing health check is an unhealthy answer, not a 500
                        doc = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    body = json.dumps(doc, sort_keys=True, default=str).encode()
                    status, ctype = (200 if doc.get("ok") else 503), "application/json"
                else:
                    body, status, ctype = b"not found; try /metrics or /healthz\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Silenced: a scrape every few seconds is not news."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{name}-http", daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        with _lock:
            for key, server in list(_serving.items()):
                if server is self:
                    del _serving[key]


_lock = threading.Lock()
_serving: dict[tuple[str, int], MetricsServer] = {}


def serve_component(
    settings: Settings,
    component: str,
    registry: CollectorRegistry,
    *,
    index: int = 0,
    health: Health | None = None,
) -> MetricsServer:
    """Serve ``registry`` on the component's assigned port (``metrics_port``).

    Calling it again in the same process for the same port and registry returns the
    running server: a process that runs a flow twice (the demo, tests) keeps one
    endpoint.  The same port with another registry is an error, not a silent takeover.
    """
    host, port = metrics_host(settings), metrics_port(settings, component, index)
    with _lock:
        running = _serving.get((host, port))
        if running is not None:
            if running.registry is not registry:
                raise RuntimeError(f"{host}:{port} already serves another registry in this process")
            return running
        try:
            server = MetricsServer(registry, port=port, host=host, health=health, name=f"{component}-{index}")
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"{component}[{index}] cannot serve /metrics on {host}:{port} ({exc.strerror}); "
                "is another instance running, or PLANTSTREAM_METRICS__BASE_PORT in use?",
            ) from exc
        _serving[(host, port)] = server
    log.info("%s[%d] serving /metrics and /healthz on http://%s:%d", component, index, host, port)
    return server
