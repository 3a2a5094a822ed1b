"""Process lifecycle: open chDB, serve HTTP, shut down cleanly on SIGTERM/SIGINT.

The serve loop runs in a thread so that the main thread can wait for a signal and then
stop accepting, let the statement in progress finish and close chDB (which flushes its
state) - all within about two seconds.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from plantstream.observability.server import MetricsServer
from plantstream.services.hotstore.auth import Credentials
from plantstream.services.hotstore.chdb_engine import ChdbEngine
from plantstream.services.hotstore.errors import ClickHouseError
from plantstream.services.hotstore.http_handler import HotstoreHTTPServer
from plantstream.services.hotstore.metrics import HotstoreMetrics

log = logging.getLogger(__name__)

EXPECTED_TIMEZONE = "UTC"


@dataclass(frozen=True)
class ServiceConfig:
    data_dir: Path
    host: str
    port: int
    credentials: Credentials
    # Where to serve /metrics and /healthz (the observability server), or None for nowhere.
    metrics_address: tuple[str, int] | None = None


def run_service(config: ServiceConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    try:
        engine = ChdbEngine(config.data_dir)
    except ClickHouseError as exc:
        # e.g. Code 76 when another process already holds the data path
        log.error("cannot open the chDB data directory %s: %s", config.data_dir, exc.text)
        return 2
    if engine.timezone != EXPECTED_TIMEZONE:
        log.error("chDB runs in time zone %s; start the hot store with TZ=UTC", engine.timezone)
        engine.close()
        return 2

    metrics = HotstoreMetrics()
    try:
        server = HotstoreHTTPServer((config.host, config.port), engine, config.credentials, metrics)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        engine.close()
        return 2
    metrics_server = None
    if config.metrics_address is not None:
        host, port = config.metrics_address
        try:
            metrics_server = MetricsServer(
                metrics.registry, port=port, host=host, health=lambda: {"ok": True, "chdb": engine.version}
            )
        except OSError as exc:
            log.error("cannot serve /metrics on %s:%d: %s", host, port, exc)
            server.server_close()
            engine.close()
            return 2

    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="hotstore-http")
    serving.start()
    port = server.server_address[1]
    log.info("chDB %s on %s, serving http://%s:%d", engine.version, config.data_dir, config.host, port)
    sys.stdout.write(f"hotstore ready on http://{config.host}:{port}\n")
    sys.stdout.flush()

    while not stop.wait(1.0):
        pass
    server.shutdown()  # stops accepting; connection threads are daemons
    server.server_close()
    if metrics_server is not None:
        metrics_server.close()
    if engine.close(wait_s=1.5):
        log.info("chDB closed")
    else:
        log.warning("a statement was still running after 1.5 s; exiting without closing chDB")
    serving.join(timeout=1.0)
    return 0
