"""The sink partitions alive in this process, so a cluster member can finish a drain
itself when Bytewax's teardown does not, and so a snapshot can start every sink's writes
at once (:func:`submit_all`).

Why: in a Bytewax 0.21 cluster, a peer that finishes first may close its sockets while
this process still tears down; timely's send thread then panics and some sink
partitions are dropped without ``close()`` - a bronze buffer would never be committed.
A member in drain mode therefore flushes every registered partition itself after the
run (:func:`flush_all`), then checks the counts before it reports success.  Flushing is
idempotent (each sink's flush is a no-op when nothing is pending) and every sink is
effectively-once, so flushing a partition twice costs nothing.  A partition that closes
normally unregisters itself.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Flushable(Protocol):
    def flush(self) -> None:
        """Write everything handed over so far and wait until it is written."""
        ...

    def submit(self) -> None:
        """Start writing everything handed over so far; do not wait."""
        ...


_lock = threading.Lock()
_partitions: list[Flushable] = []


def register(partition: Flushable) -> None:
    with _lock:
        _partitions.append(partition)


def unregister(partition: Flushable) -> None:
    """A partition that closed normally has written everything: forget it."""
    with _lock:
        if partition in _partitions:
            _partitions.remove(partition)


def flush_all() -> int:
    """Flush every registered sink partition; returns how many there were."""
    with _lock:
        partitions = list(_partitions)
    for partition in partitions:
        partition.flush()
    return len(partitions)


def submit_all() -> None:
    """Start every registered partition's writes at once (called by each sink partition's
    snapshot before it waits for its own): at an epoch close Bytewax snapshots the sinks
    one after the other on the worker thread, and each waited for its own writer alone -
    the hot-store insert, then the bronze commit, then the window insert.  Started
    together they overlap (the bronze writer releases the GIL; the hot store is another
    process), so the epoch close stalls the flow for the longest of them, not their sum."""
    with _lock:
        partitions = list(_partitions)
    for partition in partitions:
        partition.submit()


def clear() -> None:
    """Forget the partitions of earlier runs in this process (call before a run)."""
    with _lock:
        _partitions.clear()
