"""Kafka input for Bytewax that moves one item per Kafka fetch batch, not per message.

Why a custom source: Bytewax's per-item overhead dominates at telemetry rates (see
docs/streaming.md: one item per batch is ~10x the per-message flow).  Each Kafka
partition is one Bytewax source partition with its own ``assign()``-ed consumer: no
consumer group, no commits - Bytewax's recovery snapshots own the offsets
(:meth:`KafkaPartition.snapshot` is the NEXT offset to read), so a resumed flow
continues exactly after the last snapshotted batch.

Bounded ("drain") mode, ``stop_at_end=True``, ends a partition when librdkafka reports
``PARTITION_EOF`` (``enable.partition.eof``); the broker's ListOffsets high watermark is
never used to decide that (it is wrong on some brokers, and it races with producers).

A stop request (:data:`plantstream.streaming.stopping.STOP`) ends every partition's input
at its next poll.  A partition whose end, as fetch responses report it, lies *below* the
next offset the flow would read means the broker lost or reused offsets (it happens to
the local broker: docs/platform.md): the flow says so at once (an error log line, the
``plantstream_stream_offset_regressions_total`` metric and an incident that
``plantstream gaps`` shows) and, if it lasts longer than
``stream.offset_regression_grace_seconds``, stops (exit 76) rather than silently skip
whatever the broker writes at the reused offsets.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import repeat

import numpy as np
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from plantstream.connect.kafka import consumer as kafka_consumer
from plantstream.incidents import record_incident
from plantstream.settings import Settings
from plantstream.streaming import metrics
from plantstream.streaming.stopping import EXIT_OFFSETS_LOST, STOP, stop_process
from plantstream.streaming.worker_routing import partition_key

log = logging.getLogger(__name__)

__all__ = [
    "DRAIN_PROGRESS",
    "IDLE_POLL",
    "KafkaBatchSource",
    "KafkaPartition",
    "RawBatch",
    "partition_key",
    "topic_partitions",
]

# The poll interval when a partition had nothing: short enough for low latency,
# long enough not to spin a core on an idle topic.
IDLE_POLL = timedelta(milliseconds=5)


class DrainProgress:
    """How many source partitions this process built and how many reached their end,
    and when the first message arrived.

    Process-global because Bytewax builds the partitions inside its workers; the
    cluster runner reads it to tell a completed drain from an aborted one (see
    ``runner.run_cluster_member``) and reports the first message's arrival so a
    benchmark can time the flow from its first fetch, as it times a bare consumer.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.built = 0
        self.ended = 0
        self.first_data_at: float | None = None  # epoch seconds

    def data_arrived(self) -> None:
        if self.first_data_at is None:
            with self._lock:
                if self.first_data_at is None:
                    self.first_data_at = time.time()

    def add(self, *, built: int = 0, ended: int = 0) -> None:
        with self._lock:
            self.built += built
            self.ended += ended

    @property
    def complete(self) -> bool:
        return self.built > 0 and self.ended == self.built


DRAIN_PROGRESS = DrainProgress()


@dataclass(frozen=True, slots=True)
class RawBatch:
    """The messages of one Kafka fetch from one partition, in offset order.

    Keys and values are the original bytes (``None`` for a null key/value); ``offsets``
    are their Kafka offsets (not always contiguous: compaction and transaction markers
    leave gaps).
    """

    topic: str
    partition: int
    offsets: np.ndarray
    keys: list[bytes | None]
    values: list[bytes | None]

    @property
    def first_offset(self) -> int:
        return int(self.offsets[0])

    @property
    def last_offset(self) -> int:
        return int(self.offsets[-1])

    @property
    def key(self) -> str:
        return partition_key(self.partition)

    def __len__(self) -> int:
        return len(self.values)


class KafkaPartition(StatefulSourcePartition[RawBatch, int]):
    """One Kafka partition read through an ``assign()``-ed consumer."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        partition: int,
        next_offset: int | None,
        *,
        stop_at_end: bool,
        flow: str,
    ) -> None:
        from confluent_kafka import TopicPartition

        self._topic = topic
        self._partition = partition
        self._batch_size = settings.stream.consumer_batch_size
        self._stop_at_end = stop_at_end
        self._at_end = False
        self._idle = False
        self._next_offset = next_offset
        self._flow = flow
        self._lag = metrics.CONSUMER_LAG.labels(flow, topic, str(partition))
        self._events_in = metrics.EVENTS_IN.labels(flow, topic)
        self._consumer = kafka_consumer(
            settings,
            **{
                "group.id": f"{settings.kafka.client_id}-{flow}-assign",  # required by librdkafka; never joined
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 100,
                "fetch.max.bytes": 52_428_800,
                "max.partition.fetch.bytes": 10_485_760,
                "queued.min.messages": max(100_000, 4 * self._batch_size),
            },
        )
        # An explicit offset starts fetching ~0.5 s sooner than OFFSET_BEGINNING (no
        # ListOffsets round-trip first); offset 0 below the log start (retention) is
        # out of range and resets to the earliest offset (``auto.offset.reset``), which
        # is what OFFSET_BEGINNING means.
        start = 0 if next_offset is None else next_offset
        self._tp = TopicPartition(topic, partition)
        self._consumer.assign([TopicPartition(topic, partition, start)])
        self._settings = settings
        self._regressed_at: float | None = None  # monotonic time the log end was first seen below us
        self._grace_s = settings.stream.offset_regression_grace_seconds
        DRAIN_PROGRESS.add(built=1)

    def next_batch(self) -> list[RawBatch]:
        if self._at_end or STOP.is_set():
            raise StopIteration
        messages = self._consumer.consume(num_messages=self._batch_size, timeout=0)
        if not messages:
            self._idle = True
            self._check_log_end()
            return []
        self._idle = False
        DRAIN_PROGRESS.data_arrived()
        # map() over the C methods: no Python frame per message (~1 us per message
        # with four list comprehensions).
        message_type = type(messages[0])
        errors = list(map(message_type.error, messages))
        if any(map(operator.is_not, errors, repeat(None))):  # partition EOF or an error among them
            messages = self._without_events(messages, errors)
            if not messages:
                return []
        offsets = list(map(message_type.offset, messages))
        keys: list[bytes | None] = list(map(message_type.key, messages))
        values: list[bytes | None] = list(map(message_type.value, messages))
        self._next_offset = offsets[-1] + 1
        self._events_in.inc(len(values))
        _, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        if high >= 0:
            self._lag.set(max(0, high - self._next_offset))
        return [RawBatch(self._topic, self._partition, np.array(offsets, dtype=np.int64), keys, values)]

    def _without_events(self, messages: list, errors: list) -> list:
        """The data messages of a fetch; handles the events (partition EOF, errors) in it."""
        from confluent_kafka import KafkaError, KafkaException

        data = []
        for message, error in zip(messages, errors, strict=True):
            if error is None:
                data.append(message)
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                end = message.offset()
                if end is not None and end >= 0 and self._next_offset is not None and end < self._next_offset:
                    self._regression(end)
                    continue  # not the end of what we read: never end a drain on it
                if self._stop_at_end and not self._at_end:
                    self._at_end = True
                    DRAIN_PROGRESS.add(ended=1)
                continue
            if error.fatal() or not error.retriable():
                raise KafkaException(error)
            log.warning("kafka consumer %s[%d]: %s", self._topic, self._partition, error)
        return data

    def _check_log_end(self) -> None:
        """Idle: compare the partition's end from the last fetch response with our position."""
        _, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        if high < 0 or self._next_offset is None:
            return
        if high < self._next_offset:
            self._regression(high)
        elif self._regressed_at is not None:
            log.warning("%s[%d]: the log end is at or past our position again (%d)", self._topic, self._partition, high)
            self._regressed_at = None

    def _regression(self, end: int) -> None:
        now = time.monotonic()
        if self._regressed_at is None:
            self._regressed_at = now
            metrics.OFFSET_REGRESSIONS.labels(self._flow, self._topic, str(self._partition)).inc()
            log.error(
                "%s[%d] ends at offset %d but the flow has read up to %d: the broker lost or reused offsets; "
                "events written there are not read (stopping after %.0f s if it lasts)",
                self._topic,
                self._partition,
                end,
                self._next_offset,
                self._grace_s,
                extra={"event": "offset_regression", "topic": self._topic, "partition": self._partition},
            )
            record_incident(
                self._settings,
                "offset_regression",
                topic=self._topic,
                partition=self._partition,
                log_end=end,
                position=self._next_offset,
            )
        elif now - self._regressed_at > self._grace_s:
            stop_process(
                f"{self._topic}[{self._partition}] has ended at offset {end}, below the {self._next_offset} the flow "
                f"read, for {now - self._regressed_at:.0f} s: the broker lost or reused offsets. Check the broker, "
                "then restart the flow; `plantstream gaps` shows what is missing",
                EXIT_OFFSETS_LOST,
            )

    def next_awake(self) -> datetime | None:
        if self._idle and not self._at_end:
            return datetime.now(UTC) + IDLE_POLL
        return None

    def snapshot(self) -> int | None:
        """The next offset to read (None: nothing read yet, start at the beginning)."""
        return self._next_offset

    def close(self) -> None:
        self._consumer.close()


class KafkaBatchSource(FixedPartitionedSource[RawBatch, int]):
    """All partitions of ``topic``; each emits :class:`RawBatch` items.

    Delivery: every message is emitted at least once; after a crash the partitions
    resume at the offsets of the last completed snapshot, so the messages after it are
    emitted again (downstream sinks deduplicate).
    """

    def __init__(self, settings: Settings, topic: str, partitions: list[int], *, stop_at_end: bool, flow: str):
        self._settings = settings
        self._topic = topic
        self._partitions = {partition_key(p): p for p in partitions}
        self._stop_at_end = stop_at_end
        self._flow = flow

    def list_parts(self) -> list[str]:
        return sorted(self._partitions)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> KafkaPartition:
        return KafkaPartition(
            self._settings,
            self._topic,
            self._partitions[for_part],
            resume_state,
            stop_at_end=self._stop_at_end,
            flow=self._flow,
        )


def topic_partitions(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[int]:
    """Partition ids of an existing topic (raises if the topic does not exist)."""
    from plantstream.connect.kafka import admin

    metadata = admin(settings).list_topics(topic, timeout=timeout_s)
    info = metadata.topics.get(topic)
    if info is None or info.error is not None or not info.partitions:
        raise RuntimeError(f"topic {topic!r} not found or has no partitions ({info.error if info else 'missing'})")
    return sorted(info.partitions)


def read_offsets(
    settings: Settings, topic: str, partition: int, first: int, last: int, *, timeout_s: float = 120.0
) -> Iterator[RawBatch]:
    """The messages of ``topic[partition]`` at offsets ``first..last`` (inclusive), in batches.

    For state that is rebuilt from the log instead of carried in every snapshot (the
    windows' open rows).  Stops early at the partition's end (a log truncated below
    ``last``: the caller counts what it got); raises ``TimeoutError`` if the broker does
    not deliver within ``timeout_s``.
    """
    from confluent_kafka import KafkaError, TopicPartition

    consumer = kafka_consumer(
        settings,
        **{
            "group.id": f"{settings.kafka.client_id}-replay",  # required by librdkafka; never joined
            "enable.partition.eof": True,
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 10_485_760,
        },
    )
    try:
        consumer.assign([TopicPartition(topic, partition, first)])
        deadline = time.monotonic() + timeout_s
        while True:
            messages = consumer.consume(num_messages=settings.stream.consumer_batch_size, timeout=0.5)
            data = [m for m in messages if m.error() is None and first <= m.offset() <= last]
            if data:
                yield RawBatch(
                    topic,
                    partition,
                    np.array([m.offset() for m in data], dtype=np.int64),
                    [m.key() for m in data],
                    [m.value() for m in data],
                )
            if any(m.error() is None and m.offset() >= last for m in messages):
                return
            for m in messages:
                error = m.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    return
                if error is not None and not error.retriable():
                    raise RuntimeError(f"reading {topic}[{partition}] {first}..{last}: {error}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}[{partition}] offsets {first}..{last} took over {timeout_s:.0f} s")
    finally:
        consumer.close()
