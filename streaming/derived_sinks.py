"""Sinks of the branches' derived outputs: rows into a hot-store table, records onto a keyed topic.

* :class:`DerivedTableSink` - items of a branch into one of ``hot_tables.DERIVED_TABLES``
  through the same per-process writer as the raw and window sinks
  (``hot_store_sink._HotStoreWriter``: coalesced inserts on a background thread, retried
  while the hot store is away, a snapshot waits for them).  **Effectively-once in
  ``FINAL``**: every derived table is a ``ReplacingMergeTree(version)`` keyed by what a row
  describes, and a replay writes the same or a newer version of each row; the
  ``insert_deduplication_token`` (a hash of the rows' keys and versions) drops an identical
  replayed insert on the fast path.
* :class:`KeyedRecordSink` - records keyed by ``machine_id`` onto a topic (the twin's
  ``factory.twin.state``).  **At-least-once** (``kafka_sink``: idempotent producer, flushed in
  every snapshot; ``linger.ms`` 2 instead of 20: these records are waited for); a replay may
  publish an older version of a key again, so readers keep the highest ``seq`` per key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink

from plantstream.connect.kafka import producer as kafka_producer
from plantstream.settings import Settings
from plantstream.streaming import metrics
from plantstream.streaming.hot_store_sink import _HotStorePartition, _HotStoreSink
from plantstream.streaming.kafka_sink import _ProducerPartition
from plantstream.streaming.worker_routing import PartsLikeTheSource

T = TypeVar("T")


class DerivedTableSink(_HotStoreSink, FixedPartitionedSink[T, None], Generic[T]):
    """Items into ``table``: ``prepare(items)`` returns the inserts ``[(rows, token)]``."""

    def __init__(
        self,
        settings: Settings,
        partitions: list[int],
        *,
        table: str,
        sink: str,
        prepare: Callable[[list[T]], list[tuple[pa.Table, str]]],
        rows_of: Callable[[T], int],
        coalesce_rows: int,
        max_delay_s: float,
        flow: str,
    ) -> None:
        super().__init__(settings, partitions, stats=None, flow=flow)
        self._table = table
        self._sink = sink
        self._prepare = prepare
        self._rows_of = rows_of
        self._coalesce_rows = coalesce_rows
        self._max_delay_s = max_delay_s

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _HotStorePartition[T]:
        counter = metrics.ROWS_WRITTEN.labels(self._flow, self._sink)
        flow, sink = self._flow, self._sink

        def written(rows: pa.Table, seconds: float) -> None:
            counter.inc(rows.num_rows)
            metrics.observe_sink_write(flow, sink, rows.num_rows, seconds)

        return self._part(
            self._table,
            self._prepare,
            on_written=written,
            rows_of=self._rows_of,
            coalesce_rows=self._coalesce_rows,
            max_delay_s=self._max_delay_s,
        )


#: librdkafka waits this long to batch records before sending (the client default here is 20 ms):
#: alerts and twin states are read by people and machines waiting for them, and a few
#: records per partition and moment gain nothing from waiting.
KEYED_RECORD_LINGER_MS = 2


class _KeyedRecordPartition(_ProducerPartition):
    def __init__(self, settings: Settings, topic: str, sink: str, records: Callable[[Any], list], flow: str) -> None:
        super().__init__(settings, topic, sink, stats=None, flow=flow, stream=None)
        self._producer = kafka_producer(settings, **{"linger.ms": KEYED_RECORD_LINGER_MS})  # replaces the default one
        self._records = records

    def write_batch(self, values: list[Any]) -> None:
        for item in values:
            for key, value in self._records(item):
                self.produce(key, value, [])
        if self._failed:  # Kafka refused records for good: the epoch must not complete without them
            self._stop(0)


class KeyedRecordSink(PartsLikeTheSource, FixedPartitionedSink[Any, None]):
    """``records(item) -> [(key bytes, value bytes)]`` produced to ``topic`` (at-least-once)."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        partitions: list[int],
        *,
        sink: str,
        records: Callable[[Any], list[tuple[bytes, bytes]]],
        flow: str,
    ) -> None:
        super().__init__(partitions)
        self._settings = settings
        self._topic = topic
        self._sink = sink
        self._records = records
        self._flow = flow

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _KeyedRecordPartition:
        return _KeyedRecordPartition(self._settings, self._topic, self._sink, self._records, self._flow)


__all__ = ["DerivedTableSink", "KeyedRecordSink"]
