"""Sinks into the hot store (ClickHouse through ``clickhouse-connect``).

Delivery guarantee of both sinks: **effectively-once in the deduplicated view**
(``SELECT … FROM t FINAL``).  Bytewax re-delivers the items of an unfinished epoch
after a crash (at-least-once); two mechanisms make that harmless:

* the fast path: every insert carries an ``insert_deduplication_token`` derived from
  what it holds (Kafka topic/partition/offset range for raw rows; window identity,
  event count and finality for aggregates), so an identical replayed insert is dropped
  by ClickHouse (``non_replicated_deduplication_window``);
* the guarantee: a replay may cut batches differently (other tokens), so the tables
  are ReplacingMergeTrees keyed by event identity - ``(machine_id, seq)`` for raw
  rows, the window identity for aggregates - and duplicates collapse in ``FINAL``.

Inserts go through ``insert_arrow`` (no per-row Python work) on a background writer
thread per table, shared by the process's sink partitions, so the dataflow keeps decoding while the server inserts (the
round-trip was ~25 % of the flow's time).  The queue is bounded (backpressure) and
``snapshot()`` waits until it is empty and every insert succeeded: Bytewax completes an
epoch's snapshot only after that, so no row a snapshot has moved the source past can be
missing - the guarantee is the same as with synchronous inserts.  While the hot store is
away an insert is retried with backoff (safe for the same reasons) for up to
``stream.sink_retry_seconds`` and the flow waits; past that the process stops cleanly
with one line and exit code 75, and a restart resumes from the last snapshot
(:mod:`plantstream.streaming.stopping`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from plantstream.connect.hotstore import hotstore_client
from plantstream.contract.columns import MILLIS_FIELDS, TIMESTAMP_MS_UTC
from plantstream.contract.streams import StreamSpec
from plantstream.domain.aggregates import WINDOW_AGGREGATE_SCHEMA
from plantstream.settings import Settings
from plantstream.streaming import metrics, sink_registry
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.hot_tables import COPY_RANK, COPY_RANK_BASE, TELEMETRY_WINDOWS_TABLE, raw_columns
from plantstream.streaming.stopping import (
    EXIT_SINK_UNAVAILABLE,
    SinkUnavailableError,
    retry_within_budget,
    stop_process,
)
from plantstream.streaming.stream_decode import DecodedBatch
from plantstream.streaming.windowing import ClosedWindows
from plantstream.streaming.worker_routing import PartsLikeTheSource

log = logging.getLogger(__name__)

T = TypeVar("T")


def raw_rows(spec: StreamSpec, events: pa.Table) -> pa.Table:
    """Decoded events (the stream's bronze schema) reshaped for ``<stream>_raw``.

    Contract epoch-ms fields become timestamps; ``copy_rank`` makes ``FINAL`` keep the
    first copy of an event.  String columns go dictionary-encoded: the table declares the
    low-cardinality ones ``LowCardinality``, and the server took ~20 % less CPU per
    insert for dictionaries than for plain strings (it no longer hashes every value);
    encoding here runs on the writer thread.
    """
    table = events.select(raw_columns(spec))
    for name in MILLIS_FIELDS:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, table.column(name).cast(TIMESTAMP_MS_UTC))
    for index, field in enumerate(table.schema):
        if pa.types.is_string(field.type) and field.name in spec.low_cardinality:
            table = table.set_column(index, field.name, pc.dictionary_encode(table.column(index)))
    offsets = table.column("kafka_offset").combine_chunks().to_numpy(zero_copy_only=False).astype(np.uint64)
    return table.append_column(COPY_RANK, pa.array(np.uint64(COPY_RANK_BASE) - offsets))


def window_rows(closed: ClosedWindows) -> pa.Table:
    """Aggregates of one emission reshaped for ``telemetry_windows``."""
    table = closed.aggregates
    n = table.num_rows
    counts = table.column("count").to_numpy()
    version = counts.astype("uint64") * 2 + (1 if closed.final else 0)
    return (
        table.append_column("final", pa.array([int(closed.final)] * n, pa.uint8()))
        .append_column("version", pa.array(version, pa.uint64()))
        .append_column("kafka_partition", pa.array([closed.partition] * n, pa.int32()))
    )


# Inserts queued per table and process before ``write_batch`` blocks (backpressure): enough
# to overlap the server's work with the flow's, small enough to bound memory.
WRITER_QUEUE_DEPTH = 4
# Raw rows per insert into ``telemetry_raw`` (a Kafka batch is ~5k), and how long rows
# may wait for more before they go in anyway.
RAW_INSERT_ROWS = 100_000
RAW_INSERT_MAX_DELAY_S = 1.0
# The same for window aggregates (a minute's windows of a few hundred machines fit in one).
WINDOW_INSERT_ROWS = 50_000
WINDOW_INSERT_MAX_DELAY_S = 1.0
_STOP = None


class _HotStoreWriter(Generic[T]):
    """The process's writer into one hot-store table, shared by its sink partitions.

    Items of every partition are collected until they hold ``coalesce_rows`` rows (or the
    oldest waited ``max_delay_s``, or a snapshot comes) and go in as one insert on a
    background thread: the server's cost is mostly per insert and per part (5k-row
    inserts cost ~1.7x as much server time as 25k-row ones; a 150-row insert ~17 ms of
    CPU), and every part is merged again.  Shared rather than per partition for the
    same reason: four partitions' snapshots were four inserts in a row, now one.
    """

    def __init__(
        self,
        settings: Settings,
        table: str,
        prepare: Callable[[list[T]], list[tuple[pa.Table, str]]],
        *,
        on_written: Callable[[pa.Table, float], None],
        rows_of: Callable[[T], int],
        coalesce_rows: int,
        max_delay_s: float,
    ) -> None:
        self._settings = settings
        self._client: Any = None  # created and used by the writer thread only
        self._table = table
        self._prepare = prepare
        self._on_written = on_written
        self._rows_of = rows_of
        self._coalesce_rows = coalesce_rows
        self._max_delay_s = max_delay_s
        self._lock = threading.Lock()  # guards the pending items and the attached count
        self._direct = threading.Lock()  # held while the writer inserts pending items itself
        self._pending: list[T] = []
        self._pending_rows = 0
        self._pending_since: float | None = None
        self._attached = 0
        self._queue: queue.Queue[list[T] | None] = queue.Queue(WRITER_QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._writer: threading.Thread | None = None

    def attach(self) -> None:
        """A sink partition starts using this writer (the thread runs while any does)."""
        with self._lock:
            self._attached += 1
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name=f"hotstore-{self._table}", daemon=True)
                self._writer.start()

    def write(self, values: list[T]) -> None:
        self._raise_error()
        with self._lock:
            self._pending.extend(values)
            self._pending_rows += sum(self._rows_of(v) for v in values)
            if self._pending_since is None:
                self._pending_since = time.monotonic()
            if self._pending_rows < self._coalesce_rows:
                return
            values = self._take_pending_locked()
        self._enqueue(values)

    def _take_pending_locked(self) -> list[T]:
        values = self._pending
        self._pending, self._pending_rows, self._pending_since = [], 0, None
        return values

    def _enqueue(self, values: list[T]) -> None:
        if values:
            self._queue.put(values)  # shaped into inserts on the writer thread, off the dataflow's

    def _write_loop(self) -> None:
        # Connecting takes a few round-trips (~20 ms): do it here, overlapping the
        # flow's start, instead of on the dataflow's thread while Bytewax builds parts.
        # The hot store may be away (a writer attached during an outage): then the first
        # insert connects, inside its retry budget, like any insert that meets an outage.
        try:
            self._client = hotstore_client(self._settings)
        except Exception as exc:
            log.warning("hot-store writer for %s: not connected yet (%s); the first insert retries", self._table, exc)
        while True:
            try:
                item = self._queue.get(timeout=self._max_delay_s / 2)
            except queue.Empty:
                self._write_overdue()
                continue
            try:
                if item is _STOP:
                    return
                if self._error is None:  # after a failure, drain without writing
                    self._insert_items(item)
            except BaseException as exc:
                self._fail(exc)
            finally:
                self._queue.task_done()

    def _fail(self, exc: BaseException) -> None:
        # Logged here as well: the sink re-raises it inside Bytewax, where a panic during
        # unwinding can abort the process before Python prints anything.
        log.error("hot-store writer for %s failed", self._table, exc_info=exc)
        self._error = exc

    def _write_overdue(self) -> None:
        """Insert pending items that waited ``max_delay_s`` (items arrive too slowly to
        fill an insert); ``flush`` waits for this through ``_direct``."""
        with self._direct:
            with self._lock:
                if self._pending_since is None or time.monotonic() - self._pending_since < self._max_delay_s:
                    return
                values = self._take_pending_locked()
            try:
                if self._error is None:
                    self._insert_items(values)
            except BaseException as exc:
                self._fail(exc)

    def _insert_items(self, values: list[T]) -> None:
        for rows, token in self._prepare(values):
            if rows.num_rows:
                began = time.perf_counter()
                self._insert(rows, token)
                self._on_written(rows, time.perf_counter() - began)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"hot-store insert into {self._table} failed") from self._error

    def _insert(self, rows: pa.Table, token: str) -> None:
        """One insert, retried while the hot store is away (safe: the token and the table's
        key make a repeated insert harmless); the process stops cleanly past the budget."""
        settings: dict[str, Any] = {"insert_deduplication_token": token}
        try:
            retry_within_budget(
                f"insert into hot-store table {self._table}",
                lambda: self._connected().insert_arrow(self._table, rows, settings=settings),
                budget_s=self._settings.stream.sink_retry_seconds,
            )
        except SinkUnavailableError as exc:
            stop_process(f"the hot store is unavailable: {exc}", EXIT_SINK_UNAVAILABLE)

    def _connected(self):  # -> clickhouse_connect Client
        if self._client is None:
            self._client = hotstore_client(self._settings)
        return self._client

    def flush(self) -> None:
        """Insert what is pending (of every partition), wait until every insert is written;
        raise if one failed.  The partitions' snapshots all call it: the first inserts,
        the others find nothing left to wait for."""
        with self._lock:
            values = self._take_pending_locked()
        self._enqueue(values)
        self._queue.join()
        with self._direct:  # an overdue insert by the writer itself has finished
            pass
        self._raise_error()

    def detach(self) -> None:
        """A sink partition is closed: flush; the last one to close stops the thread."""
        try:
            self.flush()
        finally:
            with self._lock:
                self._attached -= 1
                writer = self._writer if self._attached <= 0 else None
                if writer is not None:
                    self._writer = None
            if writer is not None:
                self._queue.put(_STOP)
                writer.join(60)
                if self._client is not None:
                    self._client.close()
                    self._client = None


class _HotStorePartition(StatefulSinkPartition[T, None], Generic[T]):
    """One sink partition: hands its items to the process's :class:`_HotStoreWriter`;
    its snapshot waits until everything handed over so far is inserted."""

    def __init__(self, writer: _HotStoreWriter[T]) -> None:
        self._writer = writer
        writer.attach()
        sink_registry.register(self)

    def write_batch(self, values: list[T]) -> None:
        self._writer.write(values)

    def flush(self) -> None:
        self._writer.flush()

    def snapshot(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.detach()


class _HotStoreSink(PartsLikeTheSource):
    def __init__(self, settings: Settings, partitions: list[int], *, stats: FlowStats | None, flow: str) -> None:
        super().__init__(partitions)
        self._settings = settings
        self._stats = stats
        self._flow = flow
        self._writer: Any = None  # the process's _HotStoreWriter, built with the first part

    def _part(self, table: str, prepare: Callable[[list[T]], list[tuple[pa.Table, str]]], **writer: Any) -> Any:
        """A sink partition on the process's one writer for ``table`` (built on first use)."""
        if self._writer is None:
            self._writer = _HotStoreWriter(self._settings, table, prepare, **writer)
        return _HotStorePartition(self._writer)


class HotRawSink(_HotStoreSink, FixedPartitionedSink[DecodedBatch, None]):
    """Valid events of one stream into its ``<stream>_raw`` table: the batches of every
    Kafka partition this process writes are coalesced (up to ``RAW_INSERT_ROWS`` rows or
    ``RAW_INSERT_MAX_DELAY_S``) into one insert, token
    ``raw:<topic>:<partition>:<first offset>-<last offset>[,<partition>:…]``.
    Effectively-once in ``FINAL`` (see the module docstring)."""

    def __init__(
        self, settings: Settings, spec: StreamSpec, partitions: list[int], *, stats: FlowStats | None, flow: str
    ) -> None:
        super().__init__(settings, partitions, stats=stats, flow=flow)
        self._spec = spec

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _HotStorePartition[DecodedBatch]:
        spec, stats, flow = self._spec, self._stats, self._flow
        sink = f"hot_{spec.name}"
        counter = metrics.ROWS_WRITTEN.labels(flow, sink)

        def written(rows: pa.Table, seconds: float) -> None:
            counter.inc(rows.num_rows)
            metrics.observe_written(flow, sink, rows, seconds)
            if stats is not None:
                stats.add(spec.name, raw_rows_written=rows.num_rows)

        return self._part(
            spec.hot_table,
            functools.partial(_raw_inserts, spec),
            on_written=written,
            rows_of=_batch_rows,
            coalesce_rows=RAW_INSERT_ROWS,
            max_delay_s=RAW_INSERT_MAX_DELAY_S,
        )


def _batch_rows(batch: DecodedBatch) -> int:
    return batch.events.num_rows


def _raw_inserts(spec: StreamSpec, batches: list[DecodedBatch]) -> list[tuple[pa.Table, str]]:
    """One insert for the batches of one call (any partitions), tokened by each
    partition's offset range (deterministic for the same cut of batches)."""
    batches = [b for b in batches if b.events.num_rows]
    if not batches:
        return []
    ranges: dict[int, tuple[int, int]] = {}
    for batch in batches:
        first, last = ranges.get(batch.partition, (batch.first_offset, batch.last_offset))
        ranges[batch.partition] = (min(first, batch.first_offset), max(last, batch.last_offset))
    events = pa.concat_tables([b.events for b in batches]) if len(batches) > 1 else batches[0].events
    spans = ",".join(f"{p}:{first}-{last}" for p, (first, last) in sorted(ranges.items()))
    return [(raw_rows(spec, events), f"raw:{batches[0].topic}:{spans}")]


class HotWindowSink(_HotStoreSink, FixedPartitionedSink[ClosedWindows, None]):
    """Window aggregates into ``telemetry_windows``.  Emissions are coalesced (up to
    ``WINDOW_INSERT_ROWS`` rows or ``WINDOW_INSERT_MAX_DELAY_S``, and always at a
    snapshot) into one insert whose token hashes the emissions'
    :attr:`ClosedWindows.dedup_token` values: one insert per window emission cost the local
    server ~17 ms of CPU each (~1.2 s per 500k events, a quarter of the whole run), one
    insert of the same rows ~0.04 s.  Effectively-once in ``FINAL``; a final emission
    replaces a provisional one (``ReplacingMergeTree(version)``)."""

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _HotStorePartition[ClosedWindows]:
        counter = metrics.ROWS_WRITTEN.labels(self._flow, "hot_windows")
        stats = self._stats

        def written(rows: pa.Table, seconds: float) -> None:
            counter.inc(rows.num_rows)
            metrics.observe_sink_write(self._flow, "hot_windows", rows.num_rows, seconds)
            if stats is not None:
                stats.add(windows_written=rows.num_rows)

        return self._part(
            TELEMETRY_WINDOWS_TABLE,
            _window_inserts,
            on_written=written,
            rows_of=_emission_rows,
            coalesce_rows=WINDOW_INSERT_ROWS,
            max_delay_s=WINDOW_INSERT_MAX_DELAY_S,
        )


def _emission_rows(closed: ClosedWindows) -> int:
    return closed.aggregates.num_rows


def _window_inserts(emissions: list[ClosedWindows]) -> list[tuple[pa.Table, str]]:
    """One insert for the emissions of one call, tokened by all of theirs (deterministic:
    a replay that cuts the emissions the same way is dropped by the token; one that cuts
    them differently is collapsed by the engine's version)."""
    emissions = [c for c in emissions if c.aggregates.num_rows]
    if not emissions:
        return []
    rows = [window_rows(c) for c in emissions]
    table = pa.concat_tables(rows) if len(rows) > 1 else rows[0]
    digest = hashlib.sha256("\n".join(c.dedup_token for c in emissions).encode()).hexdigest()
    return [(table, f"windows:{len(emissions)}:{digest}")]


__all__ = ["WINDOW_AGGREGATE_SCHEMA", "HotRawSink", "HotWindowSink", "raw_rows", "window_rows"]
