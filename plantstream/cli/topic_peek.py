"""Reading a topic by hand (``plantstream topics peek``): partition, offset, key, headers, value.

Why not a consumer group or the broker's end offsets:

* The consumer only ``assign()``\\ s partitions at explicit offsets and never commits, so
  peeking changes no group's position (nothing to clean up, safe next to a running flow).
* "The last N messages" cannot be read off the high watermark: the local broker reports
  the start of the last batch + 1 (docs/infrastructure.md), which can be far below the
  real end.  The watermark is only a lower bound here: reading from ``high - N`` to the
  end of the partition (``enable.partition.eof``) gives at least N messages on any
  broker whose watermark is at most the end, and the last N of those are kept.  If fewer
  come back (offsets not dense: transaction markers, compaction), the window widens.

Debian's ``kcat`` cannot talk to the local broker (docs/platform.md, "Foreign clients"):
this is the client that does, with the project's own Kafka settings.
"""

from __future__ import annotations

import base64
import collections
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from plantstream.settings import Settings

#: Stop reading a partition when it neither delivers nor reports its end for this long (a
#: broker may not report the end while a producer keeps writing, docs/infrastructure.md).
IDLE_S = 10.0


class PeekError(RuntimeError):
    """The topic or partition cannot be read (missing, broker unreachable)."""


@dataclass(frozen=True)
class PeekedMessage:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    headers: list[tuple[str, bytes | None]]
    value: bytes | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: text stays text; bytes that are not UTF-8 come as ``*_base64``."""
        out: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
        }
        out.update(_json_bytes("key", self.key))
        out["headers"] = [{"name": name, **_json_bytes("value", value)} for name, value in self.headers]
        out.update(_json_bytes("value", self.value))
        return out

    def line(self) -> str:
        """One human-readable line."""
        when = (
            datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
            if self.timestamp_ms is not None
            else "-"
        )
        headers = ",".join(f"{name}={_shown(value)}" for name, value in self.headers) or "-"
        return (
            f"partition={self.partition} offset={self.offset} ts={when} key={_shown(self.key)} "
            f"headers={headers} value={_shown(self.value)}"
        )


def _json_bytes(field: str, raw: bytes | None) -> dict[str, str | None]:
    if raw is None:
        return {field: None}
    try:
        return {field: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {field: None, f"{field}_base64": base64.b64encode(raw).decode("ascii")}


def _shown(raw: bytes | None) -> str:
    if raw is None:
        return "null"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(raw)} bytes: {raw[:16].hex()}{'...' if len(raw) > 16 else ''}>"
    return text if text.isprintable() else repr(text)


def _message(msg: Any) -> PeekedMessage:
    kind, ts = msg.timestamp()
    headers = [(name, value) for name, value in (msg.headers() or [])]
    return PeekedMessage(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp_ms=ts if kind != 0 else None,  # 0 = TIMESTAMP_NOT_AVAILABLE
        key=msg.key(),
        headers=headers,
        value=msg.value(),
    )


def peek(
    settings: Settings,
    topic: str,
    *,
    partitions: list[int] | None = None,
    last: int | None = None,
    follow: bool = False,
    on_note: Callable[[str], None] = lambda _note: None,
) -> Iterator[PeekedMessage]:
    """Messages of ``topic``, partition by partition in offset order.

    ``last=None`` reads each partition from its beginning, ``last=N`` its last N messages.
    ``follow`` then waits for new messages on all of them until the caller stops iterating
    (Ctrl-C).  ``on_note`` receives remarks for the user (e.g. a partition that did not
    report its end).
    """
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    from plantstream.connect.kafka import consumer

    c = consumer(
        settings,
        **{
            # assign() only: the group id is never joined and nothing is committed.
            "group.id": f"{settings.kafka.client_id}-peek",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        },
    )
    try:
        try:
            metadata = c.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise PeekError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}") from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise PeekError(f"topic {topic!r} does not exist on {settings.kafka.bootstrap_servers}")
        available = sorted(found.partitions)
        chosen = available if partitions is None else sorted(set(partitions))
        missing = [p for p in chosen if p not in available]
        if missing:
            raise PeekError(f"topic {topic!r} has partitions {available}, not {missing}")

        def read_to_end(partition: int, start: int) -> Iterator[Any]:
            """Messages from ``start`` until the partition reports its end (then a None)."""
            c.assign([TopicPartition(topic, partition, start)])
            idle_since = time.monotonic()
            while True:
                batch = c.consume(500, timeout=0.5)
                if batch:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > IDLE_S:
                    on_note(f"partition {partition}: no end reported after {IDLE_S:g} s of quiet; moving on")
                    return
                for msg in batch:
                    error = msg.error()
                    if error is None:
                        yield msg
                    elif error.code() == KafkaError._PARTITION_EOF:
                        yield None
                        return
                    else:
                        raise PeekError(f"{topic} [{partition}]: {error}")

        next_offset: dict[int, int] = {}
        for partition in chosen:
            low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
            position = low
            if last is None:
                for msg in read_to_end(partition, low):
                    if msg is not None:
                        position = msg.offset() + 1
                        yield _message(msg)
            else:
                window = last
                while True:
                    start = max(low, high - window)
                    kept: collections.deque[Any] = collections.deque(maxlen=last)
                    position = start
                    for msg in read_to_end(partition, start):
                        if msg is not None:
                            kept.append(msg)
                            position = msg.offset() + 1
                    if len(kept) >= last or start <= low:
                        break
                    window *= 4
                for msg in kept:
                    yield _message(msg)
            next_offset[partition] = position
        if not follow:
            return
        c.assign([TopicPartition(topic, p, next_offset[p]) for p in chosen])
        while True:
            for msg in c.consume(500, timeout=0.5):
                error = msg.error()
                if error is None:
                    yield _message(msg)
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise PeekError(f"{topic} [{msg.partition()}]: {error}")
    finally:
        c.close()
