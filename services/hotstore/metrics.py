"""Prometheus metrics of the hot store.

Served like every component's (``plantstream.observability.server``) on the metrics
port the registry assigns (``metrics_port(settings, "hotstore")``), not on the
ClickHouse HTTP port: a ClickHouse server keeps its Prometheus endpoint on a port of
its own too, so scrape configs look alike locally and in production.

Labels are low-cardinality on purpose: ``kind`` is one of :data:`KINDS`, never a table,
query text or error message.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

KINDS = ("query", "insert", "ping", "other")


class HotstoreMetrics:
    """One registry per service process (not the global one, so nothing else leaks in)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "plantstream_hotstore_requests",
            "HTTP requests handled, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.errors = Counter(
            "plantstream_hotstore_request_errors",
            "HTTP requests answered with an error, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.inserted_rows = Counter(
            "plantstream_hotstore_inserted_rows",
            "Rows written by INSERT requests (as reported by chDB, duplicates included)",
            registry=self.registry,
        )
        self.duration = Histogram(
            "plantstream_hotstore_request_duration_seconds",
            "Time from request line to the end of the response, by kind",
            ["kind"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        for kind in KINDS:  # export zeros from the start, so rates work before the first error
            self.requests.labels(kind)
            self.errors.labels(kind)
            self.duration.labels(kind)
