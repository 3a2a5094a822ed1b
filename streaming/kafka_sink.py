"""Kafka sinks of the plant flow: dead letters (every stream) and late events (telemetry).

Delivery guarantee: **at-least-once.**  (While Kafka is away, a snapshot waits up to
``stream.sink_retry_seconds`` for the deliveries, then the process stops cleanly:
:mod:`plantstream.streaming.stopping`.)  Records go through the idempotent producer of
``plantstream.connect.kafka`` (no loss or reordering from producer retries); every sink
partition flushes its producer in ``snapshot()``, i.e. before Bytewax completes the
epoch's snapshot, so nothing a snapshot has moved the source past can be lost.  After a
crash the unfinished epoch is replayed and its records may be produced again: readers of
these topics deduplicate by the origin headers (source topic/partition/offset), which
identify each record uniquely.
"""

from __future__ import annotations

import logging
from typing import Any

from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from plantstream.connect.kafka import producer as kafka_producer
from plantstream.settings import Settings
from plantstream.streaming import metrics, sink_registry
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.stopping import EXIT_SINK_UNAVAILABLE, stop_process
from plantstream.streaming.stream_decode import DeadLetter
from plantstream.streaming.windowing import LateEvents
from plantstream.streaming.worker_routing import PartsLikeTheSource

log = logging.getLogger(__name__)


class _ProducerPartition(StatefulSinkPartition[Any, None]):
    def __init__(
        self, settings: Settings, topic: str, sink: str, *, stats: FlowStats | None, flow: str, stream: str | None
    ) -> None:
        self._producer = kafka_producer(settings)
        self._stream = stream
        self._budget_s = settings.stream.sink_retry_seconds
        self._topic = topic
        self._sink = sink
        self._stats = stats
        self._flow = flow
        self._failed: list[str] = []
        self._written = metrics.ROWS_WRITTEN.labels(flow, sink)
        sink_registry.register(self)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._failed.append(str(err))
        else:
            self._written.inc()

    def produce(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        while True:
            try:
                self._producer.produce(self._topic, value=value, key=key, headers=headers, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let deliveries drain, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)

    def write_batch(self, values: list[Any]) -> None:
        for item in values:
            if isinstance(item, DeadLetter):
                self.produce(item.key, item.value, item.headers())
                metrics.DEAD_LETTERS.labels(self._flow, item.topic, item.error.kind.value).inc()
                if self._stats is not None:
                    self._stats.add(self._stream, dead_letters=1)
            elif isinstance(item, LateEvents):
                for key, value, offset, event_ms, watermark in zip(
                    item.keys, item.values, item.offsets, item.event_ms, item.watermark_ms, strict=True
                ):
                    self.produce(key, value, late_headers(item, int(offset), int(event_ms), int(watermark)))
                metrics.LATE_EVENTS.labels(self._flow, item.topic).inc(len(item.values))
                if self._stats is not None:
                    self._stats.add(late=len(item.values))
            else:  # pragma: no cover - wiring error
                raise TypeError(f"{self._sink} sink got {type(item).__name__}")
        if self._failed:  # Kafka refused records for good: the epoch must not complete without them
            self._stop(0)

    def flush(self) -> None:
        self.snapshot()

    def snapshot(self) -> None:
        """Wait until every record is delivered; past the retry budget the process stops cleanly."""
        remaining = self._producer.flush(self._budget_s)
        if remaining or self._failed:
            self._stop(remaining)

    def _stop(self, remaining: int) -> None:
        stop_process(
            f"Kafka did not take the {self._sink} records for {self._topic} within {self._budget_s:.0f} s "
            f"({remaining} undelivered, errors: {self._failed[:3]})",
            EXIT_SINK_UNAVAILABLE,
        )

    def close(self) -> None:
        self.snapshot()


def late_headers(item: LateEvents, offset: int, event_ms: int, watermark_ms: int) -> list[tuple[str, bytes]]:
    return [
        ("plantstream.error.kind", b"late"),
        (
            "plantstream.error.reason",
            f"event time {event_ms} ms is in a window already closed at watermark {watermark_ms} ms".encode(),
        ),
        ("plantstream.source.topic", item.topic.encode()),
        ("plantstream.source.partition", str(item.partition).encode()),
        ("plantstream.source.offset", str(offset).encode()),
        ("plantstream.watermark_ms", str(watermark_ms).encode()),
    ]


class KafkaRecordSink(PartsLikeTheSource, FixedPartitionedSink[Any, None]):
    """Produces :class:`DeadLetter` and :class:`LateEvents` items to ``topic``
    (at-least-once; see the module docstring).  Partitions follow the source's."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        partitions: list[int],
        *,
        sink: str,
        stats: FlowStats | None,
        flow: str,
        stream: str | None = None,
    ) -> None:
        super().__init__(partitions)
        self._settings = settings
        self._topic = topic
        self._sink = sink
        self._stats = stats
        self._flow = flow
        self._stream = stream  # whose dead letters these are (per-stream counts)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ProducerPartition:
        return _ProducerPartition(
            self._settings, self._topic, self._sink, stats=self._stats, flow=self._flow, stream=self._stream
        )
