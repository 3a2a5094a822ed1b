"""Prometheus metrics of the stream processors.

Names follow Prometheus conventions (``_total`` counters, units in names) and labels
stay low-cardinality: ``flow`` (one per dataflow), ``reason`` (an ``ErrorKind``),
``sink`` (a handful) and ``partition`` (Kafka partitions of one topic).  Metrics are
process-global (the default registry), so several flows in one process share them and
tell themselves apart by ``flow``.  ``serve_metrics`` exposes ``/metrics`` and ``/healthz``
with the one observability server, on ``metrics_port(settings, "stream", K)`` for
process K (docs/observability.md has the whole scheme).
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from plantstream.observability.server import MetricsServer, serve_component
from plantstream.settings import Settings
from plantstream.streaming.plant_gauges import PLANT_GAUGES

EVENTS_IN = Counter("plantstream_stream_events_in_total", "Messages read, per input topic.", ["flow", "topic"])
EVENTS_VALID = Counter(
    "plantstream_stream_events_valid_total", "Messages that decoded and validated, per input topic.", ["flow", "topic"]
)
DEAD_LETTERS = Counter(
    "plantstream_stream_dead_letters_total",
    "Messages sent to the dead-letter topic, by input topic and reason.",
    ["flow", "topic", "reason"],
)
LATE_EVENTS = Counter(
    "plantstream_stream_late_events_total",
    "Events whose window had already closed; routed to the late topic (per input topic).",
    ["flow", "topic"],
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
OFFSET_REGRESSIONS = Counter(
    "plantstream_stream_offset_regressions_total",
    "Times a partition's end (as fetch responses report it) was seen below the flow's position: offsets lost.",
    ["flow", "topic", "partition"],
)
CONSUMER_LAG = Gauge(
    "plantstream_stream_consumer_lag_messages",
    "Messages behind the partition end as last reported to this consumer by fetch responses.",
    ["flow", "topic", "partition"],
)
OPEN_WINDOWS = Gauge("plantstream_stream_open_windows", "Event-time windows held in state, per flow.", ["flow"])
WINDOW_ROWS_NOT_REPLAYED = Counter(
    "plantstream_stream_window_rows_not_replayed_total",
    "Rows of open windows a resume could not read back from Kafka (the windows are emitted without them).",
    ["flow"],
)
TRACKED_MACHINES = Gauge(
    "plantstream_stream_tracked_machines", "Machines with per-key state (expire when idle).", ["flow"]
)

#: Failure scoring (streaming/failure_scoring.py): which registered version scores, and how much.
MODEL_VERSION_INFO = Gauge(
    "plantstream_inference_model_version_info",
    "1 for the failure model version this process scores with (no series: no model loaded).",
    ["model", "version"],
)
SCORES = Counter(
    "plantstream_inference_scores_total", "Failure probabilities published by the stream, per model.", ["flow", "model"]
)
UNSCORED = Counter(
    "plantstream_inference_unscored_total",
    "Samples due for scoring while no model was loaded (registry away or no champion).",
    ["flow", "model"],
)
REGISTRY.register(PLANT_GAUGES)  # OEE per line, machines per state, open alerts (streaming/plant_gauges.py)

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


#: Event time to the moment the flow had decoded the event, and to a sink's acknowledged write.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)
SOURCE_TO_PROCESSED = Histogram(
    "plantstream_stream_source_to_processed_seconds",
    "From an event's source timestamp (else read_ts) to its decoding by the flow (sampled per batch).",
    ["flow"],
    buckets=LATENCY_BUCKETS,
)
SOURCE_TO_COMMITTED = Histogram(
    "plantstream_stream_source_to_committed_seconds",
    "From an event's source timestamp (else read_ts) to the sink's acknowledged write (sampled per write).",
    ["flow", "sink"],
    buckets=LATENCY_BUCKETS,
)
SINK_BATCH_ROWS = Histogram(
    "plantstream_stream_sink_batch_rows",
    "Rows or records per sink write (one insert, one Delta commit, one producer flush).",
    ["flow", "sink"],
    buckets=(1, 10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000),
)
SINK_WRITE_DURATION = Histogram(
    "plantstream_stream_sink_write_duration_seconds",
    "Wall time of one sink write, from its start to the target's acknowledgement.",
    ["flow", "sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def observe_source_latency(flow: str, event_ms: np.ndarray, *, sink: str | None = None) -> None:
    """Record event time -> now for a systematic sample of a batch.

    ``sink=None``: the batch was just decoded (``…_source_to_processed_seconds``); a sink
    name: its write was just acknowledged (``…_source_to_committed_seconds``).  Event
    time is ``source_ts`` where the device gives one, else ``read_ts`` (Modbus); a
    negative age (device clock ahead) counts as 0.
    """
    if len(event_ms) == 0:
        return
    step = max(1, len(event_ms) // LATENCY_SAMPLES_PER_WRITE)
    now_ms = time.time() * 1000.0
    histogram = SOURCE_TO_PROCESSED.labels(flow) if sink is None else SOURCE_TO_COMMITTED.labels(flow, sink)
    for event in event_ms[::step]:
        histogram.observe(max(0.0, (now_ms - float(event)) / 1000.0))


def observe_sink_write(flow: str, sink: str, rows: int, seconds: float) -> None:
    """Record one acknowledged sink write: its size and how long it took."""
    SINK_BATCH_ROWS.labels(flow, sink).observe(rows)
    SINK_WRITE_DURATION.labels(flow, sink).observe(seconds)


def _event_ms(rows: pa.Table) -> np.ndarray | None:
    """Event time of contract rows: ``source_ts`` where the device gives one, else ``read_ts``."""
    names = rows.column_names
    if "read_ts" not in names:
        return None
    event = rows.column("read_ts").cast(pa.int64())
    if "source_ts" in names:
        event = pc.coalesce(rows.column("source_ts").cast(pa.int64()), event)
    return event.to_numpy(zero_copy_only=False)


def observe_decoded(flow: str, rows: pa.Table) -> None:
    """Event time -> decoded, for a sample of a batch of valid events."""
    event = _event_ms(rows)
    if event is not None:
        observe_source_latency(flow, event)


def observe_written(flow: str, sink: str, rows: pa.Table, seconds: float) -> None:
    """Everything one acknowledged write of contract rows tells: its size and duration,
    ingest -> write latency and event time -> write latency (``source_ts``, else ``read_ts``)."""
    observe_sink_write(flow, sink, rows.num_rows, seconds)
    names = rows.column_names
    if "ingest_ts" in names:
        observe_latency(flow, sink, rows.column("ingest_ts").cast(pa.int64()).to_numpy())
    event = _event_ms(rows)
    if event is not None:
        observe_source_latency(flow, event, sink=sink)


def set_model_version(model: str, version: str | None, previous: str | None) -> None:
    """The champion watcher swapped versions: the info series moves from ``previous`` to ``version``."""
    if previous is not None:
        with contextlib.suppress(KeyError):  # never set: the process started with no model
            MODEL_VERSION_INFO.remove(model, previous)
    if version is not None:
        MODEL_VERSION_INFO.labels(model, version).set(1)


def serve_metrics(settings: Settings, index: int = 0) -> MetricsServer:
    """Serve this process's metrics (the default registry) as stream process ``index``.

    Idempotent within a process (the demo and tests run flows one after another); the
    server lives as long as the process, like the flow's counters.
    """
    return serve_component(
        settings, "stream", REGISTRY, index=index, health=lambda: {"ok": True, "component": "stream", "index": index}
    )
