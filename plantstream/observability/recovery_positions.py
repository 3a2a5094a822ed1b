"""A dataflow's own Kafka positions, read from its Bytewax recovery store.

Why from the recovery store: the telemetry flow uses no consumer group (Bytewax
snapshots own the offsets, docs/streaming.md), so there are no committed group offsets
to compare with the log end, and the flow's in-process lag gauge disappears exactly
when it matters most: when the flow is down.  The recovery store is on disk and says
where a restarted flow would resume, whether or not the flow runs.

The store is a directory of SQLite files (``part-N.sqlite3``, WAL mode) under
``<state_dir>/recovery/<flow>/<namespace>/``, written by Bytewax 0.21.1
(``src/recovery.rs``).  Tables used here:

* ``exs(ex_num, worker_count, resume_epoch)`` - one row per execution (start);
* ``fronts(ex_num, worker_index, worker_frontier)`` - each worker's progress: the oldest
  epoch it has not finished backing up;
* ``snaps(step_id, state_key, snap_epoch, ser_change)`` - pickled state snapshots.

A resume happens from the epoch Bytewax computes as: take the latest execution; each of
its workers' frontier is the largest ``worker_frontier`` recorded for it (or the
execution's ``resume_epoch`` if none); the resume epoch is the smallest of those.  The
state of each ``(step_id, state_key)`` is then its snapshot with the largest
``snap_epoch`` *below* the resume epoch.  This module runs the same computation over
all partition files (an execution's rows and a worker's frontier can sit in any of
them).  For a Kafka source step the state key is the Bytewax part key of a partition
(``plantstream.streaming.worker_routing.partition_key``) and the state is the next
offset to read (``KafkaPartition.snapshot``), or ``None`` before the first read.

It lags the running flow by at most one snapshot interval
(``stream.snapshot_interval_seconds``): that is the replay a crash would cost, which is
the lag worth alerting on.

Reading is safe while the flow writes: read-only connections to WAL databases neither
block the writer nor see half a transaction, and each read is one short transaction.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Snapshots larger than this are not Kafka offsets (a pickled int is ~15 bytes); skipping
#: them in SQL keeps a read cheap even when window state is megabytes.
_MAX_OFFSET_SNAPSHOT_BYTES = 64


@dataclass(frozen=True)
class FlowPositions:
    """Where a restart of one flow would resume, per Kafka source step."""

    flow: str
    namespace: str
    resume_epoch: int | None  # None: the flow never ran with this store
    # step id of a Kafka source -> partition -> next offset to read (None: nothing read yet).
    # A step whose every snapshot is None may also be a stateless sink: callers tell them
    # apart by the step's name.
    offsets: dict[str, dict[int, int | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class RecoveryStore:
    """One recovery directory: ``<state_dir>/recovery/<flow>/<namespace>/``.

    The runner names the namespace after the topic set the flow reads (its topic
    prefix, ``catalogue`` for none): one store per flow and deployment.
    """

    flow: str
    namespace: str
    path: Path


def find_recovery_stores(recovery_root: Path) -> list[RecoveryStore]:
    """Every ``<flow>/<namespace>/`` directory under ``recovery_root`` that holds partition files."""
    stores = []
    if not recovery_root.is_dir():
        return stores
    for flow_dir in sorted(p for p in recovery_root.iterdir() if p.is_dir()):
        for topic_dir in sorted(p for p in flow_dir.iterdir() if p.is_dir()):
            if any(topic_dir.glob("part-*.sqlite3")):
                stores.append(RecoveryStore(flow_dir.name, topic_dir.name, topic_dir))
    return stores


class _OffsetUnpickler(pickle.Unpickler):
    """Loads plain values only: a snapshot that needs a class is not an offset (and the
    exporter never runs code from a state file)."""

    def find_class(self, module: str, name: str) -> type:
        raise pickle.UnpicklingError(f"not an offset snapshot ({module}.{name})")


_NOT_AN_OFFSET = object()


def _snapshot_value(blob: bytes | None) -> object:
    """The snapshot as an offset (int), None (nothing read yet, or a stateless sink), or
    :data:`_NOT_AN_OFFSET`."""
    if blob is None:
        return None
    try:
        value = _OffsetUnpickler(io.BytesIO(blob)).load()
    except (pickle.UnpicklingError, EOFError, ValueError):
        return _NOT_AN_OFFSET
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return _NOT_AN_OFFSET


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    try:
        yield conn
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def resume_epoch(files: list[Path]) -> int | None:
    """The epoch a restart resumes from (Bytewax 0.21.1's computation), or None if never run."""
    executions: list[tuple[int, int, int]] = []
    fronts: list[tuple[int, int, int]] = []
    for path in files:
        with _read_only(path) as conn:
            tables = _tables(conn)
            if "exs" in tables:
                executions += conn.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall()
            if "fronts" in tables:
                fronts += conn.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts").fetchall()
    if not executions:
        return None
    ex_num, worker_count, ex_resume = max(executions)
    frontier = dict.fromkeys(range(worker_count), ex_resume)
    for ex, worker, value in fronts:
        if ex == ex_num:
            frontier[worker] = max(frontier.get(worker, value), value)
    return min(frontier.values())


def read_positions(store: RecoveryStore, partition_of_key: Callable[[str], int | None]) -> FlowPositions:
    """The source offsets a restart of ``store``'s flow would resume from, per source step.

    ``partition_of_key`` maps a Bytewax state key to a Kafka partition (None: not a
    partition key).  A source step is recognised by its state: every snapshot under a
    partition key is an int offset (or None).  Steps keyed the same way that hold other
    state (windows, sinks) are thereby excluded.
    """
    files = sorted(store.path.glob("part-*.sqlite3"))
    epoch = resume_epoch(files)
    if epoch is None:
        return FlowPositions(store.flow, store.namespace, None)
    latest: dict[tuple[str, str], tuple[int, bytes | None]] = {}
    not_offsets: set[str] = set()
    for path in files:
        with _read_only(path) as conn:
            if "snaps" not in _tables(conn):
                continue
            rows = conn.execute(
                "SELECT step_id, state_key, snap_epoch, "
                "CASE WHEN length(ser_change) <= ? THEN ser_change END, length(ser_change) > ? "
                "FROM snaps WHERE snap_epoch < ?",
                (_MAX_OFFSET_SNAPSHOT_BYTES, _MAX_OFFSET_SNAPSHOT_BYTES, epoch),
            ).fetchall()
        for step, key, snap_epoch, blob, too_big in rows:
            if too_big:
                not_offsets.add(step)
                continue
            seen = latest.get((step, key))
            if seen is None or snap_epoch > seen[0]:
                latest[(step, key)] = (snap_epoch, blob)
    offsets: dict[str, dict[int, int | None]] = {}
    for (step, key), (_epoch, blob) in sorted(latest.items()):
        if step in not_offsets:
            continue
        partition = partition_of_key(key)
        if partition is None:
            not_offsets.add(step)
            continue
        value = _snapshot_value(blob)
        if value is _NOT_AN_OFFSET:
            not_offsets.add(step)
        else:
            offsets.setdefault(step, {})[partition] = value  # type: ignore[assignment]
    return FlowPositions(
        store.flow, store.namespace, epoch, {step: parts for step, parts in offsets.items() if step not in not_offsets}
    )
