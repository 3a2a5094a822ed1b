"""Event-time tumbling windows per machine and signal, one state per Kafka partition.

Why per partition: a machine's events all live in one partition (keyed by
``machine_id``), so the partition is the natural unit of state - it stays on the
worker that reads the partition (no shuffle) and its watermark only depends on that
partition's own progress (librdkafka delivers partitions in long runs, so a global
watermark would make the other partitions late).

Semantics, all in event time (ms):

* watermark = max event time seen on the partition - ``allowed_lateness``;
* a window ``[start, end)`` closes when the watermark reaches ``end``: its aggregates
  (:func:`plantstream.domain.aggregates.window_aggregates`) are emitted once, final,
  and the window is DROPPED from state;
* an event whose window (for any configured width) has closed is *late*: it is counted
  and routed to the late topic with its original bytes, and left out of every window
  (so the 60 s and 300 s windows agree on their inputs);
* lateness is judged against the watermark as it stood just before that event
  (a running maximum inside the batch), so the result does not depend on how the
  broker happened to cut batches - a replay after a crash emits identical windows;
* per-machine state (last event time, highest seq: sequence gap detection) expires
  after ``idle_key_expiry_seconds`` of event time without events, so state stays flat
  as machines come and go; window state is bounded because closed windows are dropped;
* at end of input (drain mode) every open window is emitted as *provisional*
  (``final=False``) and kept: a later run that sees more events re-emits it, and the
  hot store keeps the most complete version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from bytewax.operators import StatefulBatchLogic

from plantstream.domain.aggregates import AGGREGATE_INPUT_COLUMNS, epoch_ms, window_aggregates, window_start_ms
from plantstream.settings import Settings
from plantstream.streaming import metrics
from plantstream.streaming.stream_decode import DecodedBatch

log = logging.getLogger(__name__)

_NO_TIME = np.iinfo(np.int64).min // 4


@dataclass(frozen=True, slots=True)
class WindowConfig:
    window_seconds: tuple[int, ...]
    allowed_lateness_ms: int
    idle_key_expiry_ms: int

    @classmethod
    def from_settings(cls, settings: Settings) -> WindowConfig:
        s = settings.stream
        widths = tuple(sorted({s.window_seconds, s.second_window_seconds}))
        return cls(widths, s.allowed_lateness_seconds * 1000, s.idle_key_expiry_seconds * 1000)


@dataclass(frozen=True, slots=True)
class ClosedWindows:
    """Aggregates of every (machine, signal) in one window of one partition.

    ``final`` is False for a provisional emission at end of input.  ``events`` is the
    number of events the window held; with the window identity it makes the hot
    store's deduplication token (a replay emits the same, a fuller re-emission differs).
    """

    topic: str
    partition: int
    window_seconds: int
    window_start_ms: int
    events: int
    final: bool
    aggregates: pa.Table

    @property
    def dedup_token(self) -> str:
        kind = "final" if self.final else "provisional"
        return (
            f"windows:{self.topic}:{self.partition}:{self.window_seconds}:{self.window_start_ms}:{self.events}:{kind}"
        )


@dataclass(frozen=True, slots=True)
class LateEvents:
    """Valid events whose window had already closed, with their original bytes."""

    topic: str
    partition: int
    keys: list[bytes | None]
    values: list[bytes | None]
    offsets: np.ndarray
    event_ms: np.ndarray
    watermark_ms: np.ndarray


WindowOutput = ClosedWindows | LateEvents


class PartitionWindows:
    """The window state of one partition; pure Python + numpy/Arrow, no Bytewax.

    ``process`` takes a decoded batch and returns what to emit; ``flush`` emits open
    windows provisionally; ``snapshot``/``restore`` round-trip the state.
    """

    def __init__(
        self, config: WindowConfig, state: dict[str, Any] | None = None, *, topic: str = "", flow: str = "telemetry"
    ) -> None:
        self.config = config
        self.flow = flow
        self.topic = topic
        self.partition = -1
        self.max_event_ms: int = _NO_TIME
        self.windows: dict[int, dict[int, list[pa.Table]]] = {w: {} for w in config.window_seconds}
        self.machines: dict[str, tuple[int, int]] = {}  # machine_id -> (last event ms, highest seq)
        self.next_expiry_scan_ms: int = _NO_TIME
        self.seq_gaps = 0
        if state is not None:
            self._restore(state)
        metrics.OPEN_WINDOWS.labels(flow).inc(self.open_window_count)
        metrics.TRACKED_MACHINES.labels(flow).inc(len(self.machines))

    # -- state ---------------------------------------------------------------------
    @property
    def watermark_ms(self) -> int:
        return self.max_event_ms - self.config.allowed_lateness_ms

    @property
    def open_window_count(self) -> int:
        return sum(len(by_start) for by_start in self.windows.values())

    def snapshot(self) -> dict[str, Any]:
        """A copy that later processing cannot change (new containers; Arrow tables
        are immutable, so sharing their buffers is safe).  Chunks are compacted first."""
        windows: dict[int, dict[int, list[pa.Table]]] = {}
        for width, by_start in self.windows.items():
            for chunks in by_start.values():
                if len(chunks) > 1:
                    chunks[:] = [pa.concat_tables(chunks)]
            windows[width] = {start: list(chunks) for start, chunks in by_start.items()}
        return {
            "version": 1,
            "max_event_ms": self.max_event_ms,
            "windows": windows,
            "machines": dict(self.machines),
            "next_expiry_scan_ms": self.next_expiry_scan_ms,
            "partition": self.partition,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown window state version {state.get('version')!r}")
        self.max_event_ms = state["max_event_ms"]
        for width, by_start in state["windows"].items():
            if width not in self.windows:
                log.warning("dropping state of window width %ss no longer configured", width)
                continue
            self.windows[width] = {start: list(chunks) for start, chunks in by_start.items()}
        self.machines = dict(state["machines"])
        self.next_expiry_scan_ms = state["next_expiry_scan_ms"]
        self.partition = state["partition"]

    # -- processing ----------------------------------------------------------------
    def process(self, batch: DecodedBatch) -> list[WindowOutput]:
        events = batch.events
        self.partition = batch.partition
        if events.num_rows == 0:
            return []
        ts = epoch_ms(events.column("event_ts"))
        late = self._late_mask(ts)
        out: list[WindowOutput] = []
        if late.any():
            rows = np.flatnonzero(late)
            raw_rows = batch.raw_index[rows]
            out.append(
                LateEvents(
                    batch.topic,
                    batch.partition,
                    [batch.raw.keys[i] for i in raw_rows],
                    [batch.raw.values[i] for i in raw_rows],
                    batch.raw.offsets[raw_rows],
                    ts[rows],
                    self._watermark_before(ts)[rows],
                )
            )
        on_time = ~late
        self._add(events.select(list(AGGREGATE_INPUT_COLUMNS)), ts, on_time)
        self._track_machines(events, ts)
        self.max_event_ms = max(self.max_event_ms, int(ts.max()))
        out.extend(self._close(self.watermark_ms))
        self._expire_machines()
        return out

    def _watermark_before(self, ts: np.ndarray) -> np.ndarray:
        """Watermark as it stood just before each event of the batch."""
        before = np.empty_like(ts)
        before[0] = self.max_event_ms
        if len(ts) > 1:
            np.maximum(np.maximum.accumulate(ts)[:-1], self.max_event_ms, out=before[1:])
        return before - self.config.allowed_lateness_ms

    def _late_mask(self, ts: np.ndarray) -> np.ndarray:
        watermark = self._watermark_before(ts)
        late = np.zeros(len(ts), dtype=bool)
        for width in self.config.window_seconds:
            late |= window_start_ms(ts, width) + width * 1000 <= watermark
        return late

    def _add(self, events: pa.Table, ts: np.ndarray, on_time: np.ndarray) -> None:
        if not on_time.any():
            return
        if not on_time.all():
            keep = np.flatnonzero(on_time)
            events, ts = events.take(pa.array(keep)), ts[keep]
        added = 0
        for width, by_start in self.windows.items():
            starts = window_start_ms(ts, width)
            first, last = starts.min(), starts.max()
            if first == last:  # the common case: the whole batch in one window
                chunks = by_start.setdefault(int(first), [])
                added += not chunks
                chunks.append(events)
                continue
            for start in np.unique(starts):
                chunks = by_start.setdefault(int(start), [])
                added += not chunks
                chunks.append(events.filter(pa.array(starts == start)))
        metrics.OPEN_WINDOWS.labels(self.flow).inc(added)

    def _close(self, watermark: int) -> list[WindowOutput]:
        out: list[WindowOutput] = []
        closed = 0
        for width, by_start in self.windows.items():
            ready = sorted(start for start in by_start if start + width * 1000 <= watermark)
            if ready:
                out.extend(self._emit(width, [(start, by_start.pop(start)) for start in ready], final=True))
                closed += len(ready)
        if closed:
            metrics.OPEN_WINDOWS.labels(self.flow).dec(closed)
        return out

    def _emit(self, width: int, windows: list[tuple[int, list[pa.Table]]], *, final: bool) -> list[ClosedWindows]:
        """One :class:`ClosedWindows` per window, aggregated in ONE vectorised pass.

        Why one pass: a partition catching up (a replayed buffer, a backfill) closes
        hundreds of windows per batch, and a call of ``window_aggregates`` per window
        cost ~0.3 ms of fixed overhead each - 3.4 us per event on a day of data.  The
        aggregates are per (machine, signal, window) either way, so they are the same.
        """
        tables = [pa.concat_tables(chunks) if len(chunks) > 1 else chunks[0] for _, chunks in windows]
        if len(windows) == 1:
            per_window = [window_aggregates(tables[0], width)]
        else:
            per_window = _split_by_window(window_aggregates(pa.concat_tables(tables), width), [s for s, _ in windows])
        return [
            ClosedWindows(self.topic, self.partition, width, start, table.num_rows, final, aggregates)
            for (start, _), table, aggregates in zip(windows, tables, per_window, strict=True)
        ]

    def flush(self) -> list[WindowOutput]:
        """Emit every open window as provisional; the windows stay open."""
        out: list[WindowOutput] = []
        for width, by_start in self.windows.items():
            for chunks in by_start.values():
                if len(chunks) > 1:
                    chunks[:] = [pa.concat_tables(chunks)]
            if by_start:
                out.extend(self._emit(width, [(start, by_start[start]) for start in sorted(by_start)], final=False))
        return out

    # -- per-machine state ---------------------------------------------------------
    def _track_machines(self, events: pa.Table, ts: np.ndarray) -> None:
        # Per machine: max event time, min/max seq and distinct seqs (numpy sort +
        # reduceat; an Arrow group_by cost ~2.5 ms per batch).
        encoded = events.column("machine_id").combine_chunks().dictionary_encode()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        seq = events.column("seq").combine_chunks().cast(pa.int64()).to_numpy(zero_copy_only=False)
        order = np.lexsort((seq, codes))
        codes, seq, ts = codes[order], seq[order], ts[order]
        first_of_machine = np.ones(len(codes), dtype=bool)
        first_of_machine[1:] = codes[1:] != codes[:-1]
        starts = np.flatnonzero(first_of_machine)
        ends = np.append(starts[1:], len(codes))
        new_seq = first_of_machine.copy()
        new_seq[1:] |= seq[1:] != seq[:-1]
        names = encoded.dictionary.to_pylist()
        per_machine = {
            "machine_id": [names[c] for c in codes[starts].tolist()],
            "ts_max": np.maximum.reduceat(ts, starts).tolist(),
            "seq_min": seq[starts].tolist(),
            "seq_max": seq[ends - 1].tolist(),
            "seq_count_distinct": np.add.reduceat(new_seq.astype(np.int64), starts).tolist(),
        }
        gaps = 0
        new = 0
        machines = self.machines
        for machine, last_ts, low, high, distinct in zip(
            per_machine["machine_id"],
            per_machine["ts_max"],
            per_machine["seq_min"],
            per_machine["seq_max"],
            per_machine["seq_count_distinct"],
            strict=True,
        ):
            known = machines.get(machine)
            gaps += high - low + 1 - distinct
            if known is None:
                new += 1
                machines[machine] = (last_ts, high)
                continue
            seen_ts, seen_seq = known
            if low > seen_seq + 1:
                gaps += low - seen_seq - 1
            machines[machine] = (max(seen_ts, last_ts), max(seen_seq, high))
        if new:
            metrics.TRACKED_MACHINES.labels(self.flow).inc(new)
        if gaps > 0:
            self.seq_gaps += gaps
            metrics.SEQ_GAPS.labels(self.flow).inc(gaps)

    def _expire_machines(self) -> None:
        if self.max_event_ms < self.next_expiry_scan_ms:
            return
        expiry = self.config.idle_key_expiry_ms
        horizon = self.max_event_ms - expiry
        stale = [m for m, (last_ts, _) in self.machines.items() if last_ts < horizon]
        for machine in stale:
            del self.machines[machine]
        if stale:
            metrics.TRACKED_MACHINES.labels(self.flow).dec(len(stale))
        self.next_expiry_scan_ms = self.max_event_ms + max(1, expiry // 4)


def _split_by_window(aggregates: pa.Table, starts: list[int]) -> list[pa.Table]:
    """The rows of each window start in ``starts`` (in that order), from one aggregate table."""
    window_ms = epoch_ms(aggregates.column("window_start"))
    order = np.argsort(window_ms, kind="stable")
    ordered_ms = window_ms[order]
    ordered = aggregates.take(pa.array(order))
    wanted = np.asarray(starts, dtype=np.int64)
    firsts = np.searchsorted(ordered_ms, wanted, side="left").tolist()
    ends = np.searchsorted(ordered_ms, wanted, side="right").tolist()
    return [ordered.slice(first, end - first) for first, end in zip(firsts, ends, strict=True)]


class TelemetryWindowLogic(StatefulBatchLogic[DecodedBatch, WindowOutput, dict]):
    """Bytewax glue around :class:`PartitionWindows` (one instance per Kafka partition)."""

    def __init__(self, config: WindowConfig, resume_state: dict[str, Any] | None, *, topic: str, flow: str) -> None:
        self.windows = PartitionWindows(config, resume_state, topic=topic, flow=flow)

    def on_batch(self, values: list[DecodedBatch]) -> tuple[list[WindowOutput], bool]:
        out: list[WindowOutput] = []
        for batch in values:
            out.extend(self.windows.process(batch))
        return out, StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[WindowOutput], bool]:
        return self.windows.flush(), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        return self.windows.snapshot()
