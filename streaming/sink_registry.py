"""The sink partitions alive in this process, so a cluster member can finish a drain
itself when Bytewax's teardown does not.

Why: in a Bytewax 0.21 cluster, a peer that finishes first may close its sockets while
this process still tears down; timely's send thread then panics and some sink
partitions are dropped without ``close()`` - a bronze buffer would never be committed.
A member in drain mode therefore flushes every registered partition itself after the
run (:func:`flush_all`), then checks the counts before it reports success.  Flushing is
idempotent (each sink's flush is a no-op when nothing is pending) and every sink is
effectively-once, so flushing a partition that did close costs nothing.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Flushable(Protocol):
    def flush(self) -> None: ...


_lock = threading.Lock()
_partitions: list[Flushable] = []


def register(partition: Flushable) -> None:
    with _lock:
        _partitions.append(partition)


def flush_all() -> int:
    """Flush every registered sink partition; returns how many there were."""
    with _lock:
        partitions = list(_partitions)
    for partition in partitions:
        partition.flush()
    return len(partitions)


def clear() -> None:
    """Forget the partitions of earlier runs in this process (call before a run)."""
    with _lock:
        _partitions.clear()
