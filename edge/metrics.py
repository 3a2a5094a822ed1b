"""Prometheus metrics of the gateway, served with the one observability server.

Each gateway gets its own :class:`CollectorRegistry` (several gateways can run in one
test process).  Labels stay low-cardinality: ``protocol`` (3 values), ``reason``, and
``machine`` only on the two per-machine state gauges, whose cardinality is the plant's
machine count (what a dashboard of connection states needs anyway); never machine x
signal.  Names follow docs/observability.md; :func:`serve_gateway_metrics` serves them
with ``/healthz`` on the port the registry assigns (``metrics_port(settings, "gateway")``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from plantstream.observability.server import MetricsServer, serve_component
from plantstream.settings import Settings

__all__ = ["GatewayMetrics", "MetricsServer", "serve_gateway_metrics"]


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
        # The bounds next to the depth: "near its bound" is then one PromQL division,
        # right whatever the gateway was configured with.
        self.buffer_max_events = Gauge(
            "plantstream_edge_buffer_max_events", "Configured bound of the buffer in events", registry=r
        )
        self.buffer_max_bytes = Gauge(
            "plantstream_edge_buffer_max_bytes", "Configured bound of the buffer in bytes", registry=r
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
        self.lost_after_ack = Counter(
            "plantstream_edge_lost_after_ack",
            "Events Kafka acknowledged but did not hold when read back after a reconnection (resent)",
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value (0 if absent): for tests and the benchmark."""
        got = self.registry.get_sample_value(name, labels or None)
        return 0.0 if got is None else float(got)


def serve_gateway_metrics(
    settings: Settings, metrics: GatewayMetrics, health: Callable[[], dict[str, Any]], index: int = 0
) -> MetricsServer:
    """Serve the gateway's ``/metrics`` and ``/healthz`` (200 if Kafka and every peer are up, else 503)."""
    metrics.buffer_max_events.set(settings.edge.buffer_max_events)
    metrics.buffer_max_bytes.set(settings.edge.buffer_max_mb * 1024 * 1024)
    return serve_component(settings, "gateway", metrics.registry, index=index, health=health)
