"""Prometheus metrics and the ``/healthz`` document of the gateway.

Each gateway gets its own :class:`CollectorRegistry` (several gateways can run in one
test process).  Labels stay low-cardinality: ``protocol`` (3 values), ``reason``, and
``machine`` only on the two per-machine state gauges, whose cardinality is the plant's
machine count (what a dashboard of connection states needs anyway).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events_in = Counter(
            "plantstream_edge_events_in", "Readings stored durably in the buffer", ["protocol"], registry=r
        )
        self.events_out = Counter(
            "plantstream_edge_events_out", "Events Kafka confirmed (acks=all)", ["protocol"], registry=r
        )
        self.repeats = Counter(
            "plantstream_edge_repeats_skipped",
            "Readings whose source timestamp was already taken (re-deliveries), not re-emitted",
            ["protocol"],
            registry=r,
        )
        self.dropped = Counter(
            "plantstream_edge_buffer_dropped", "Events lost to the buffer's overflow policy", ["policy"], registry=r
        )
        self.buffer_events = Gauge("plantstream_edge_buffer_events", "Events waiting in the local buffer", registry=r)
        self.buffer_bytes = Gauge("plantstream_edge_buffer_bytes", "Approximate bytes in the local buffer", registry=r)
        self.buffer_oldest_age = Gauge(
            "plantstream_edge_buffer_oldest_age_seconds", "Age of the oldest buffered event (0 if empty)", registry=r
        )
        self.reconnects = Counter(
            "plantstream_edge_reconnects", "Peer connections re-established after a loss", ["protocol"], registry=r
        )
        self.connection_up = Gauge(
            "plantstream_edge_connection_up",
            "1 if the machine's peer is connected",
            ["machine", "protocol"],
            registry=r,
        )
        self.machine_stale = Gauge(
            "plantstream_edge_machine_stale", "1 if the machine is marked stale", ["machine"], registry=r
        )
        self.stale_machines = Gauge("plantstream_edge_stale_machines", "Machines currently stale", registry=r)
        self.stale_events = Counter(
            "plantstream_edge_stale_transitions", "Times a machine was declared stale", registry=r
        )
        self.kafka_up = Gauge("plantstream_edge_kafka_up", "1 if Kafka delivered recently or answers", registry=r)
        self.producer_recreated = Counter(
            "plantstream_edge_producer_recreated", "Kafka producers replaced (stuck after a broker restart)", registry=r
        )
        self.unverified_acks = Counter(
            "plantstream_edge_unverified_acks",
            "Kafka acknowledgements without an offset, verified against the partition (resent if absent)",
            registry=r,
        )
        self.reconciled = Counter(
            "plantstream_edge_reconciled",
            "Buffered events found already in Kafka after a crash or producer change (not resent)",
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 if absent): for tests and the benchmark."""
        got = self.registry.get_sample_value(name, labels or None)
        return 0.0 if got is None else float(got)


class MetricsServer:
    """``/metrics`` (Prometheus text) and ``/healthz`` (JSON; 200 if Kafka and every peer are up, else 503)."""

    def __init__(
        self, metrics: GatewayMetrics, health: Callable[[], dict[str, Any]], port: int, host: str = "127.0.0.1"
    ) -> None:

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body, status, ctype = metrics.exposition(), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    doc = health()
                    body = json.dumps(doc, sort_keys=True).encode()
                    status, ctype = (200 if doc.get("ok") else 503), "application/json"
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="edge-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
