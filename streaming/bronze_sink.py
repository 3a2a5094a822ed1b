"""The bronze Delta table of telemetry on S3, written by the stream.

Delivery guarantee: **effectively-once per Kafka offset.**  Each commit carries a Delta
application transaction ``(app_id = bronze app of (topic, partition), version = highest
Kafka offset in the commit)``.  On (re)start a sink partition reads its committed
version back (``DeltaTable.transaction_version``) and never writes a row at or below
it, so a replay after a crash - whatever batches Bytewax replays, however they are cut -
adds no duplicate rows.  Each Kafka partition's rows arrive in offset order, which is
what makes "highest offset written" a complete description of what is in the table.

Rows are buffered and written in sizeable files (``stream.bronze_flush_rows`` or
``stream.bronze_flush_seconds``, whichever comes first).  The unwritten buffer is part
of the sink's Bytewax snapshot, so rows a snapshot has moved the source past are never
lost, and small event rates do not produce a file per epoch.
"""

from __future__ import annotations

import logging
import time

import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from plantstream.connect.s3 import delta_storage_options
from plantstream.settings import Settings
from plantstream.streaming import metrics, sink_registry
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.kafka_source import partition_key
from plantstream.streaming.telemetry_decode import DecodedBatch
from plantstream.streaming.telemetry_schema import BRONZE_PARTITION_COLUMNS, BRONZE_TELEMETRY_SCHEMA

log = logging.getLogger(__name__)

__all__ = ["BRONZE_TELEMETRY_SCHEMA", "BronzeTelemetrySink", "bronze_app_id", "bronze_telemetry_uri"]


def bronze_telemetry_uri(settings: Settings) -> str:
    """Where the bronze telemetry table lives (``s3://…/bronze/telemetry``)."""
    return settings.lake.table_uri("bronze", "telemetry")


def bronze_app_id(topic: str, partition: int) -> str:
    """Delta application-transaction id of one Kafka partition's writer."""
    return f"plantstream.stream.bronze:{topic}:{partition}"


def committed_offset(settings: Settings, uri: str, app_id: str) -> int | None:
    """Highest Kafka offset committed by ``app_id`` (None: table or app not there yet)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(uri, storage_options=delta_storage_options(settings))
    except TableNotFoundError:
        return None
    return table.transaction_version(app_id)


class _BronzePartition(StatefulSinkPartition[DecodedBatch, pa.Table | None]):
    """Buffers and commits rows; keeps the committed offset of every Kafka partition it
    has seen, so it stays correct whichever Kafka partitions Bytewax routes to it."""

    def __init__(
        self, settings: Settings, uri: str, topic: str, buffered: pa.Table | None, *, stats: FlowStats | None, flow: str
    ) -> None:
        self._settings = settings
        self._uri = uri
        self._topic = topic
        self._storage = delta_storage_options(settings)
        self._flush_rows = settings.stream.bronze_flush_rows
        self._flush_seconds = settings.stream.bronze_flush_seconds
        self._stats = stats
        self._flow = flow
        self._rows_written = metrics.ROWS_WRITTEN.labels(flow, "bronze")
        self._committed: dict[int, int | None] = {}
        self._chunks: list[pa.Table] = [] if buffered is None else [buffered]
        self._buffered_rows = 0 if buffered is None else buffered.num_rows
        self._oldest = time.monotonic() if self._buffered_rows else None
        sink_registry.register(self)

    def _committed_offset(self, partition: int) -> int | None:
        if partition not in self._committed:
            self._committed[partition] = committed_offset(
                self._settings, self._uri, bronze_app_id(self._topic, partition)
            )
        return self._committed[partition]

    def write_batch(self, values: list[DecodedBatch]) -> None:
        for batch in values:
            if batch.events.num_rows:
                self._chunks.append(batch.events)
                self._buffered_rows += batch.events.num_rows
                if self._stats is not None:
                    self._stats.add(bronze_rows_received=batch.events.num_rows)
                if self._oldest is None:
                    self._oldest = time.monotonic()
        self._flush_if_due()

    def _flush_if_due(self) -> None:
        if not self._buffered_rows:
            return
        age = time.monotonic() - (self._oldest or time.monotonic())
        if self._buffered_rows >= self._flush_rows or age >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered rows above each partition's committed offset, in one commit."""
        from deltalake import CommitProperties, Transaction, write_deltalake

        if not self._chunks:
            return
        table = pa.concat_tables(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        partitions = pc.unique(table.column("kafka_partition")).to_pylist()
        keep = None
        transactions = []
        now_ms = int(time.time() * 1000)
        for partition in partitions:
            in_partition = pc.equal(table.column("kafka_partition"), partition)
            committed = self._committed_offset(partition)
            if committed is not None:
                in_partition = pc.and_(in_partition, pc.greater(table.column("kafka_offset"), committed))
            keep = in_partition if keep is None else pc.or_(keep, in_partition)
            offsets = table.column("kafka_offset").filter(in_partition)
            if len(offsets):
                transactions.append((partition, int(pc.max(offsets).as_py())))
        table = table.filter(keep)
        if table.num_rows:
            write_deltalake(
                self._uri,
                table,
                mode="append",
                partition_by=list(BRONZE_PARTITION_COLUMNS),
                storage_options=self._storage,
                commit_properties=CommitProperties(
                    app_transactions=[
                        Transaction(bronze_app_id(self._topic, p), offset, now_ms) for p, offset in transactions
                    ],
                    max_commit_retries=50,
                ),
            )
            self._committed.update(dict(transactions))
            self._rows_written.inc(table.num_rows)
            metrics.observe_latency(self._flow, "bronze", table.column("ingest_ts").to_numpy())
            if self._stats is not None:
                self._stats.add(bronze_rows_written=table.num_rows)
        self._chunks, self._buffered_rows, self._oldest = [], 0, None

    def snapshot(self) -> pa.Table | None:
        """The rows not yet committed (carried in the snapshot: the source has moved past them)."""
        self._flush_if_due()
        if not self._chunks:
            return None
        if len(self._chunks) > 1:
            self._chunks = [pa.concat_tables(self._chunks)]
        return self._chunks[0]

    def close(self) -> None:
        self.flush()


class BronzeTelemetrySink(FixedPartitionedSink[DecodedBatch, pa.Table | None]):
    """Appends decoded telemetry to the bronze Delta table; one sink partition per Kafka
    partition (items keyed by :func:`partition_key`).  See the module docstring for the
    delivery guarantee."""

    def __init__(
        self, settings: Settings, topic: str, partitions: list[int], *, stats: FlowStats | None, flow: str
    ) -> None:
        self._settings = settings
        self._uri = bronze_telemetry_uri(settings)
        self._topic = topic
        self._parts = sorted(partition_key(p) for p in partitions)
        self._index = {key: i for i, key in enumerate(self._parts)}
        self._stats = stats
        self._flow = flow

    def list_parts(self) -> list[str]:
        return self._parts

    def part_fn(self, item_key: str) -> int:
        return self._index[item_key]

    def build_part(self, step_id: str, for_part: str, resume_state: pa.Table | None) -> _BronzePartition:
        return _BronzePartition(
            self._settings,
            self._uri,
            self._topic,
            resume_state,
            stats=self._stats,
            flow=self._flow,
        )
