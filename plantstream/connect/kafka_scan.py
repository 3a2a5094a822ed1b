"""Read (machine_id, seq) of every message of a topic up to each partition's current end.

Both the forwarder's reconciliation (which buffered events does Kafka already hold?) and
``plantstream gaps`` (which sequence numbers are missing?) need exactly this.  The end of
a partition is detected with ``enable.partition.eof``, never from the broker's high
watermark (wrong on the local broker, see docs/infrastructure.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import msgspec


class EventKey(msgspec.Struct):
    """The two fields of a contract event that identify it; the rest is not decoded."""

    machine_id: str
    seq: int


class NotReadToEndError(TimeoutError):
    """Some partitions did not reach their end in time (a busy topic on a slow broker)."""

    def __init__(self, topic: str, partitions: set[int], timeout_s: float) -> None:
        super().__init__(f"partitions {sorted(partitions)} of {topic} not read to the end in {timeout_s} s")
        self.partitions = partitions


def scan_ranges(
    cons: Any, ranges: dict[tuple[str, int], tuple[int, int]], *, timeout_s: float
) -> Iterator[tuple[str, EventKey]]:
    """Yield ``(topic, key)`` of every contract event at offsets ``first`` .. ``last`` of each
    ``(topic, partition)`` in ``ranges``, all read by one consumer at once.

    A partition is done when its ``last`` offset (or anything after it) was read: unlike
    :func:`scan_keys` this does not wait for a busy partition's end.  Raises
    :class:`NotReadToEndError` if some range is not complete within ``timeout_s``.
    """
    from confluent_kafka import TopicPartition

    if not ranges:
        return
    cons.assign([TopicPartition(t, p, first) for (t, p), (first, _last) in ranges.items()])
    open_ranges = dict(ranges)
    decode = msgspec.json.Decoder(EventKey).decode
    deadline = time.monotonic() + timeout_s
    while open_ranges:
        if time.monotonic() > deadline:
            topic = next(iter(open_ranges))[0]
            raise NotReadToEndError(topic, {p for _, p in open_ranges}, timeout_s)
        for msg in cons.consume(10_000, timeout=0.05):
            if msg.error() is not None:
                continue
            where = (msg.topic(), msg.partition())
            bounds = open_ranges.get(where)
            if bounds is None:
                continue
            if msg.offset() <= bounds[1]:
                with contextlib.suppress(msgspec.MsgspecError):
                    yield where[0], decode(msg.value())
            if msg.offset() >= bounds[1]:
                del open_ranges[where]
                cons.incremental_unassign([TopicPartition(*where)])


def scan_keys(cons: Any, topic: str, starts: list[Any], timeout_s: float) -> Iterator[EventKey | None]:
    """Yield the key of every message from ``starts`` (TopicPartitions) to the end of each.

    ``cons`` is a consumer with ``enable.partition.eof``; messages that are not contract
    events yield ``None`` (they are still counted by callers that count reads).  Raises
    :class:`NotReadToEndError` after ``timeout_s``.
    """
    from confluent_kafka import KafkaError

    cons.assign(starts)
    open_parts = {tp.partition for tp in starts}
    decode = msgspec.json.Decoder(EventKey).decode
    deadline = time.monotonic() + timeout_s
    while open_parts:
        if time.monotonic() > deadline:
            raise NotReadToEndError(topic, open_parts, timeout_s)
        for msg in cons.consume(10_000, timeout=0.5):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    open_parts.discard(msg.partition())
                continue
            try:
                yield decode(msg.value())
            except msgspec.MsgspecError:
                yield None
