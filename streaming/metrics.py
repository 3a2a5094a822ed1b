"""Prometheus metrics of the stream processors.

Names follow Prometheus conventions (``_total`` counters, units in names) and labels
stay low-cardinality: ``flow`` (one per dataflow), ``reason`` (an ``ErrorKind``),
``sink`` (a handful) and ``partition`` (Kafka partitions of one topic).  Metrics are
process-global (the default registry), so several flows in one process share them and
tell themselves apart by ``flow``.  ``serve_metrics`` exposes ``/metrics``.
"""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter("plantstream_stream_events_in_total", "Messages read from the input topic.", ["flow"])
EVENTS_VALID = Counter("plantstream_stream_events_valid_total", "Messages that decoded and validated.", ["flow"])
DEAD_LETTERS = Counter(
    "plantstream_stream_dead_letters_total", "Messages sent to the dead-letter topic, by reason.", ["flow", "reason"]
)
LATE_EVENTS = Counter(
    "plantstream_stream_late_events_total",
    "Events whose window had already closed; routed to the late topic.",
    ["flow"],
)
ROWS_WRITTEN = Counter(
    "plantstream_stream_rows_written_total", "Rows or records handed to a sink and acknowledged.", ["flow", "sink"]
)
SEQ_GAPS = Counter(
    "plantstream_stream_sequence_gaps_total",
    "Missing per-machine sequence numbers seen by the stream (loss upstream of Kafka).",
    ["flow"],
)
PROCESSING_LATENCY = Histogram(
    "plantstream_stream_processing_latency_seconds",
    "From an event's ingest_ts to its write by a sink (sampled: up to 64 events per write).",
    ["flow", "sink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)
CONSUMER_LAG = Gauge(
    "plantstream_stream_consumer_lag_messages",
    "Messages behind the partition end as last reported to this consumer by fetch responses.",
    ["flow", "topic", "partition"],
)
OPEN_WINDOWS = Gauge("plantstream_stream_open_windows", "Event-time windows held in state, per flow.", ["flow"])
TRACKED_MACHINES = Gauge(
    "plantstream_stream_tracked_machines", "Machines with per-key state (expire when idle).", ["flow"]
)

LATENCY_SAMPLES_PER_WRITE = 64


def observe_latency(flow: str, sink: str, ingest_ms: np.ndarray) -> None:
    """Record ingest → now latency for a systematic sample of the written events.

    Observing every event would cost about a microsecond each on the hot path; an
    even sample of each write keeps the distribution and costs nothing measurable.
    """
    if len(ingest_ms) == 0:
        return
    step = max(1, len(ingest_ms) // LATENCY_SAMPLES_PER_WRITE)
    now_ms = time.time() * 1000.0
    histogram = PROCESSING_LATENCY.labels(flow, sink)
    for ingest in ingest_ms[::step]:
        histogram.observe(max(0.0, (now_ms - float(ingest)) / 1000.0))


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` on ``port`` (a daemon thread of this process)."""
    start_http_server(port, addr=addr)
