"""Counts of one in-process run of a dataflow, returned by the runner.

The Prometheus counters are process-global and cumulative; a caller (the demo, a test)
wants the numbers of *this* run, so the flow's steps also add to a :class:`FlowStats`
that the runner hands in.  Counts are of this execution only: after a resume, events
replayed from the last snapshot are counted again (the sinks deduplicate the rows).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields


@dataclass
class FlowStats:
    events_in: int = 0
    events_valid: int = 0
    dead_letters: int = 0
    late: int = 0
    raw_rows_written: int = 0
    bronze_rows_written: int = 0
    windows_written: int = 0
    bronze_rows_received: int = 0
    windows_emitted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to counters (thread-safe: several workers of one process may share it)."""
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def __getstate__(self) -> dict[str, int]:
        return self.as_dict()

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(**state)  # type: ignore[misc]
