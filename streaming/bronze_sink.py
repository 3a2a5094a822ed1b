"""The bronze Delta table of each stream on S3 (``bronze/<stream>``), written by the stream.

Delivery guarantee: **effectively-once per Kafka offset.**  Each commit carries a Delta
application transaction ``(app_id = bronze app of (topic, partition), version = highest
Kafka offset in the commit)``.  On (re)start a sink partition reads its committed
version back (``DeltaTable.transaction_version``) and never writes a row at or below
it, so a replay after a crash - whatever batches Bytewax replays, however they are cut -
adds no duplicate rows.  Each Kafka partition's rows arrive in offset order, which is
what makes "highest offset written" a complete description of what is in the table.

Rows are buffered and committed in sizeable files by one writer per process (shared by
its sink partitions, so one commit carries the rows of every Kafka partition the process
reads, with one app transaction each), on a background thread that overlaps the
dataflow.  A commit starts when the buffer reaches ``stream.bronze_flush_rows`` or
``stream.bronze_flush_seconds``, and at every snapshot.  **A snapshot does not wait for
that commit**: a sink partition's snapshot is the highest Kafka offset it was handed, and
a resume compares it with the offset the table holds (the app transaction) and reads the
difference back from Kafka (``kafka_source.read_offsets``, decoded like the flow does)
before the source goes on.  So every row the source has moved past is either in the
table or still in Kafka and named by the snapshot, and the flow never stops for S3 at an
epoch (waiting for four tables' commits cost ~0.8 s of stall per snapshot at 24k
events/s, the p99 of every latency figure).  While S3 is away a commit is retried with backoff
for up to ``stream.sink_retry_seconds``; the buffer and the queue (``WRITER_QUEUE_DEPTH``
commits) fill and then the flow waits; past the budget the process stops cleanly (one
line, exit code 75) and a restart resumes from the last snapshot.  The price of
committing at snapshots: at most one commit per snapshot interval per process at low
event rates (compact the table's small files periodically).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from plantstream.connect.delta_schema import add_missing_columns
from plantstream.connect.s3 import delta_storage_options
from plantstream.contract.columns import BRONZE_PARTITION_COLUMNS, bronze_schema
from plantstream.contract.streams import StreamSpec
from plantstream.settings import Settings
from plantstream.streaming import metrics, sink_registry
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.stopping import (
    EXIT_SINK_UNAVAILABLE,
    SinkUnavailableError,
    retry_within_budget,
    stop_process,
)
from plantstream.streaming.stream_decode import DecodedBatch
from plantstream.streaming.worker_routing import PartsLikeTheSource, partition_key

if TYPE_CHECKING:
    from deltalake import WriterProperties

log = logging.getLogger(__name__)

# Commits queued before ``add`` blocks (backpressure).
WRITER_QUEUE_DEPTH = 2

__all__ = ["BronzeSink", "bronze_app_id", "bronze_uri", "ensure_bronze_table"]


def bronze_uri(settings: Settings, spec: StreamSpec) -> str:
    """Where the stream's bronze table lives (``s3://…/bronze/<stream>``)."""
    return settings.lake.table_uri("bronze", spec.name)


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


def ensure_bronze_table(settings: Settings, spec: StreamSpec) -> None:
    """Create the stream's (empty) bronze table unless it exists; an existing one gains the
    columns the contract added since it was made (``add_missing_columns``).

    Members that each created the table with their first commit raced for Delta version
    0 and the loser's commit failed ("Metadata changed since last commit"), so the
    runner creates it before the flow starts.  Processes started together elsewhere
    (one pod each) may still race here: losing that race is fine once the table exists.
    """
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = bronze_uri(settings, spec)
    storage = delta_storage_options(settings)
    try:
        add_missing_columns(DeltaTable(uri, storage_options=storage), bronze_schema(spec))
        return
    except TableNotFoundError:
        pass
    try:
        DeltaTable.create(
            uri,
            bronze_schema(spec),
            mode="ignore",
            partition_by=list(BRONZE_PARTITION_COLUMNS),
            storage_options=storage,
        )
    except Exception:
        DeltaTable(uri, storage_options=storage)  # another process created it: fine; else raise
        log.info("bronze table %s was created concurrently by another process", uri)


_STOP = None


def bronze_writer_properties() -> WriterProperties:
    """Parquet settings of the bronze files: ZSTD level 1, dictionary encoding off.

    Why: with deltalake's defaults (dictionary on, Snappy) writing cost ~610 ns of CPU
    per row and 4.7 MB per 133k rows; without dictionaries (the strings repeat, but the
    many numeric columns do not, and ZSTD finds the repeats anyway) and with ZSTD 1 it
    costs ~350 ns per row and 1.1 MB (measured 2026-11-25).  The writer's CPU competes
    with the dataflow's for the same cores, so it is the stream's throughput too.
    """
    from deltalake import ColumnProperties, WriterProperties

    return WriterProperties(
        compression="ZSTD",
        compression_level=1,
        default_column_properties=ColumnProperties(dictionary_enabled=False),
    )


class _BronzeWriter:
    """The process's bronze writer, shared by its sink partitions: buffers rows, commits
    them on a background thread, and keeps the committed offset of every Kafka
    partition it has seen (it stays correct whichever partitions Bytewax routes here)."""

    def __init__(
        self, settings: Settings, spec: StreamSpec, uri: str, topic: str, *, stats: FlowStats | None, flow: str
    ) -> None:
        self._settings = settings
        self._spec = spec
        self._uri = uri
        self._topic = topic
        self._storage = delta_storage_options(settings)
        self._flush_rows = settings.stream.bronze_flush_rows
        self._flush_seconds = settings.stream.bronze_flush_seconds
        self._stats = stats
        self._flow = flow
        self._sink = f"bronze_{spec.name}"
        self._rows_written = metrics.ROWS_WRITTEN.labels(flow, self._sink)
        self._committed: dict[int, int | None] = {}  # used by the writer thread only
        self._lock = threading.Lock()
        self._chunks: list[pa.Table] = []
        self._buffered_rows = 0
        self._oldest: float | None = None
        self._queue: queue.Queue[pa.Table | None] = queue.Queue(WRITER_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._writer_properties = bronze_writer_properties()

    def add(self, table: pa.Table) -> None:
        """Buffer rows (one Kafka partition's, in offset order); commit when due."""
        self._raise_error()
        with self._lock:
            self._chunks.append(table)
            self._buffered_rows += table.num_rows
            if self._oldest is None:
                self._oldest = time.monotonic()
            due = self._buffered_rows >= self._flush_rows or time.monotonic() - self._oldest >= self._flush_seconds
            if due:
                self._submit_locked()

    def _submit_locked(self) -> None:
        if not self._chunks:
            return
        table = pa.concat_tables(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks, self._buffered_rows, self._oldest = [], 0, None
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_loop, name="bronze-writer", daemon=True)
            self._thread.start()
        self._queue.put(table)

    @property
    def uri(self) -> str:
        return self._uri

    def table_offset(self, partition: int) -> int | None:
        """The highest offset of ``partition`` the table holds, read from the table now."""
        return committed_offset(self._settings, self._uri, bronze_app_id(self._topic, partition))

    def submit(self) -> None:
        """Start committing everything buffered (returns once it is queued)."""
        self._raise_error()
        with self._lock:
            self._submit_locked()

    def flush(self) -> None:
        """Commit everything buffered and wait until it is in the table; raise if a commit failed."""
        with self._lock:
            self._submit_locked()
        self._queue.join()
        self._raise_error()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self._thread is not None:
                self._queue.put(_STOP)
                self._thread.join(60)
                self._thread = None

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"bronze commit to {self._uri} failed") from self._error

    def _write_loop(self) -> None:
        while True:
            table = self._queue.get()
            try:
                if table is _STOP:
                    return
                if self._error is None:  # after a failure, drain without writing
                    self._commit(table)
            except BaseException as exc:
                # Logged here as well: the sink re-raises it inside Bytewax, where a panic
                # during unwinding can abort the process before Python prints anything.
                log.exception("bronze commit to %s failed", self._uri)
                self._error = exc
            finally:
                self._queue.task_done()

    def _committed_offset(self, partition: int) -> int | None:
        if partition not in self._committed:
            self._committed[partition] = committed_offset(
                self._settings, self._uri, bronze_app_id(self._topic, partition)
            )
        return self._committed[partition]

    def _commit(self, table: pa.Table) -> None:
        """Commit, retried while S3 is away; the process stops cleanly past the budget.

        Each retry reads the committed offsets back from the table first: a commit whose
        answer was lost may have succeeded, and then the offset filter skips its rows.
        """
        attempts = [0]

        def attempt() -> None:
            if attempts[0]:
                self._committed.clear()
            attempts[0] += 1
            self._commit_once(table)

        try:
            retry_within_budget(
                f"commit to bronze table {self._uri}", attempt, budget_s=self._settings.stream.sink_retry_seconds
            )
        except SinkUnavailableError as exc:
            stop_process(f"the lake (S3) is unavailable: {exc}", EXIT_SINK_UNAVAILABLE)

    def _commit_once(self, table: pa.Table) -> None:
        """Commit the rows above each partition's committed offset, in one commit."""
        from deltalake import CommitProperties, Transaction, write_deltalake

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
        if not table.num_rows:
            return
        began = time.perf_counter()
        write_deltalake(
            self._uri,
            table,
            mode="append",
            partition_by=list(BRONZE_PARTITION_COLUMNS),
            storage_options=self._storage,
            writer_properties=self._writer_properties,
            commit_properties=CommitProperties(
                app_transactions=[
                    Transaction(bronze_app_id(self._topic, p), offset, now_ms) for p, offset in transactions
                ],
                max_commit_retries=50,
            ),
        )
        self._committed.update(dict(transactions))
        self._rows_written.inc(table.num_rows)
        metrics.observe_written(self._flow, self._sink, table, time.perf_counter() - began)
        if self._stats is not None:
            self._stats.add(self._spec.name, bronze_rows_written=table.num_rows)


class _BronzePartition(StatefulSinkPartition[DecodedBatch, "int | pa.Table | None"]):
    """One sink partition (one Kafka partition): hands its rows to the process's
    :class:`_BronzeWriter`; its snapshot is the highest offset it was handed."""

    def __init__(self, writer: _BronzeWriter, partition: int, *, stats: FlowStats | None) -> None:
        self._writer = writer
        self._partition = partition
        self._stats = stats
        self._received: int | None = None
        sink_registry.register(self)

    def resume(self, state: int | pa.Table | None, read_back: Callable[[int, int], Iterable[pa.Table]]) -> None:
        """Before the first batch: what the table lacks of the last snapshot comes back from Kafka."""
        if isinstance(state, pa.Table):  # an earlier release's snapshot carried the unwritten rows
            if state.num_rows:
                self._writer.add(state)  # the offset filter drops rows the table already has
            return
        if state is None:
            return
        self._received = state
        committed = self._writer.table_offset(self._partition)
        if committed is None or committed < state:
            first = 0 if committed is None else committed + 1
            rows = 0
            for events in read_back(first, state):
                if events.num_rows:
                    self._writer.add(events)
                    rows += events.num_rows
            log.info(
                "%s: %d rows (offsets %d..%d) the table lacked were read back from Kafka",
                self._writer.uri, rows, first, state,
                extra={"event": "bronze_read_back", "rows": rows},
            )  # fmt: skip

    def write_batch(self, values: list[DecodedBatch]) -> None:
        for batch in values:
            self._received = batch.last_offset
            if batch.events.num_rows:
                self._writer.add(batch.events)
                if self._stats is not None:
                    self._stats.add(batch.stream.name, bronze_rows_received=batch.events.num_rows)

    def flush(self) -> None:
        self._writer.flush()

    def snapshot(self) -> int | None:
        """Start a commit of what is buffered, without waiting: the offset names what a resume re-reads."""
        self._writer.submit()
        return self._received

    def close(self) -> None:
        self._writer.close()


class BronzeSink(PartsLikeTheSource, FixedPartitionedSink[DecodedBatch, pa.Table | None]):
    """Appends one stream's decoded events to its bronze Delta table; one sink partition
    per Kafka partition (items keyed by their partition key).  See the module docstring
    for the delivery guarantee."""

    def __init__(
        self,
        settings: Settings,
        spec: StreamSpec,
        topic: str,
        partitions: list[int],
        *,
        stats: FlowStats | None,
        flow: str,
    ) -> None:
        super().__init__(partitions)
        self._partition_of = {partition_key(p): p for p in partitions}
        self._settings = settings
        self._spec = spec
        self._uri = bronze_uri(settings, spec)
        self._topic = topic
        self._stats = stats
        self._flow = flow
        self._writer: _BronzeWriter | None = None
        # ``write_deltalake`` imports pandas on its first call (~0.2 s holding the import
        # lock and the GIL): pay that while the flow is built, not in the middle of a run.
        import pandas  # noqa: F401

    def build_part(self, step_id: str, for_part: str, resume_state: int | pa.Table | None) -> _BronzePartition:
        if self._writer is None:  # one writer for the partitions this process builds
            self._writer = _BronzeWriter(
                self._settings, self._spec, self._uri, self._topic, stats=self._stats, flow=self._flow
            )
        partition = self._partition_of[for_part]
        part = _BronzePartition(self._writer, partition, stats=self._stats)
        part.resume(resume_state, lambda first, last: self._read_back(partition, first, last))
        return part

    def _read_back(self, partition: int, first: int, last: int) -> Iterable[pa.Table]:
        from plantstream.streaming.kafka_source import read_offsets
        from plantstream.streaming.stream_decode import StreamDecoder

        decoder = StreamDecoder.from_settings(self._spec, self._settings)
        for raw in read_offsets(self._settings, self._topic, partition, first, last):
            yield decoder.decode(raw).events
