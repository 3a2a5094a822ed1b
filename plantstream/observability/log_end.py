"""The log end (high watermark) of Kafka partitions, taken from fetch responses.

Why not ListOffsets: the local broker (Tansu 0.6) answers ListOffsets(latest) - which
is what ``Consumer.get_watermark_offsets(cached=False)`` and
``AdminClient.list_offsets`` send - with the start of the partition's last record batch
+ 1, not its end (measured: 999,211 for 1,000,000 records; docs/infrastructure.md).  Lag
computed from it comes out too low, and right after a large batch close to zero.  The
high watermark that every *fetch response* carries is right, on Tansu and on Kafka
alike, and librdkafka keeps the last one per partition
(``get_watermark_offsets(cached=True)``).

So this tracker keeps one consumer (``assign()``, no group, no commits) fetching at the
end of every watched partition and reads the cached high watermark; the messages it
receives are dropped unread.  A newly watched partition starts at ``OFFSET_END``: on
Tansu librdkafka then resolves that position with the wrong ListOffsets answer (at or
below the true end), so the first fetch may return the tail of the last batch, which is
dropped like the rest - the position is never used as the log end.  Until a partition's
first fetch response arrives its end is unknown (``None``), never a guess.

Cost: the tracker reads every message of the watched topics once (in librdkafka, then
dropped); the exporter reports how many (``plantstream_exporter_tail_messages_total``).
A broker that does not answer leaves the last values in place (the exporter's
``plantstream_platform_service_up{service="tansu"}`` says whether it answers).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from plantstream.connect.kafka import admin, consumer
from plantstream.settings import Settings

log = logging.getLogger(__name__)

#: How long the broker may hold a fetch at the end of a partition before answering
#: (bounds how stale a watermark is while nothing is produced).
FETCH_WAIT_MS = 500


class LogEndTracker:
    """High watermarks of the watched topics' partitions, from fetch responses.

    Not thread-safe: one thread calls :meth:`watch`, :meth:`poll`, :meth:`ends` and
    :meth:`close` (librdkafka consumers belong to one thread).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer = consumer(
            settings,
            **{
                "group.id": f"{settings.kafka.client_id}-log-end",  # required by librdkafka; never joined
                "enable.partition.eof": False,
                "fetch.wait.max.ms": FETCH_WAIT_MS,
                "fetch.max.bytes": 8 * 1024 * 1024,
                "queued.max.messages.kbytes": 16_384,  # dropped anyway: no need to queue much
                "auto.offset.reset": "latest",
            },
        )
        self._admin: Any = None
        self._assigned: dict[tuple[str, int], Any] = {}  # (topic, partition) -> TopicPartition
        self.messages_read = 0

    def partitions(self, topic: str) -> list[int]:
        """Partition ids of ``topic`` from the broker's metadata ([] if it does not exist yet)."""
        if self._admin is None:
            self._admin = admin(self._settings)
        info = self._admin.list_topics(topic, timeout=5).topics.get(topic)
        if info is None or info.error is not None:
            return []
        return sorted(info.partitions)

    def watch(self, topics: set[str]) -> None:
        """Fetch at the end of every partition of ``topics`` (new ones are added, gone ones dropped)."""
        from confluent_kafka import OFFSET_END, TopicPartition

        wanted = {(t, p) for t in topics for p in self.partitions(t)}
        added = wanted - self._assigned.keys()
        removed = self._assigned.keys() - wanted
        if removed:
            self._consumer.incremental_unassign([self._assigned.pop(key) for key in sorted(removed)])
        if added:
            new = {key: TopicPartition(key[0], key[1], OFFSET_END) for key in sorted(added)}
            self._consumer.incremental_assign(list(new.values()))
            for key in new:
                self._assigned[key] = TopicPartition(key[0], key[1])

    def poll(self, seconds: float) -> int:
        """Let fetch responses arrive for about ``seconds``; drop what they carried."""
        deadline = time.monotonic() + seconds
        got = 0
        while (left := deadline - time.monotonic()) > 0:
            got += len(self._consumer.consume(num_messages=10_000, timeout=min(left, 0.25)))
        self.messages_read += got
        return got

    def ends(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> high watermark of the last fetch response, for those that had one."""
        out = {}
        for key, tp in self._assigned.items():
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high is not None and high >= 0:
                out[key] = high
        return out

    def close(self) -> None:
        self._consumer.close()
