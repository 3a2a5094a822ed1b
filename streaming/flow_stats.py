"""Counts of one in-process run of a dataflow, per stream, returned by the runner.

The Prometheus counters are process-global and cumulative; a caller (the demo, a test)
wants the numbers of *this* run, so the flow's steps also add to a :class:`FlowStats`
that the runner hands in.  Counts are of this execution only: after a resume, events
replayed from the last snapshot are counted again (the sinks deduplicate the rows).

Per-stream counts (:data:`STREAM_COUNTS`) are kept per stream name; reading one as an
attribute (``stats.events_in``) gives the total over the streams.  Branch counts that
belong to no single stream (:data:`FLOW_COUNTS`: windows, late events, alerts) are kept
once.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

STREAM_COUNTS = (
    "events_in",
    "events_valid",
    "dead_letters",
    "raw_rows_written",
    "bronze_rows_received",
    "bronze_rows_written",
)
FLOW_COUNTS = ("late", "windows_emitted", "windows_written", "alerts_emitted")


class FlowStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(STREAM_COUNTS, 0))
        self._flow: dict[str, int] = dict.fromkeys(FLOW_COUNTS, 0)

    def add(self, stream: str | None = None, **counts: int) -> None:
        """Add to counters (thread-safe: several workers of one process may share it).

        Per-stream counts need ``stream``; flow counts must not have one.
        """
        with self._lock:
            for name, count in counts.items():
                if name in FLOW_COUNTS:
                    self._flow[name] += count
                elif stream is None:
                    raise ValueError(f"{name} is counted per stream: pass stream=")
                else:
                    self._streams[stream][name] += count

    def stream(self, name: str) -> dict[str, int]:
        """The counts of one stream (zeros if it saw nothing)."""
        with self._lock:
            return dict(self._streams[name]) if name in self._streams else dict.fromkeys(STREAM_COUNTS, 0)

    @property
    def streams(self) -> list[str]:
        with self._lock:
            return sorted(self._streams)

    def __getattr__(self, name: str) -> int:
        if name in STREAM_COUNTS:
            with self._lock:
                return sum(counts[name] for counts in self._streams.values())
        if name in FLOW_COUNTS:
            with self._lock:
                return self._flow[name]
        raise AttributeError(name)

    def as_dict(self) -> dict[str, Any]:
        """``{"streams": {name: counts}, <flow counts>, <totals>}`` (JSON-ready)."""
        with self._lock:
            streams = {name: dict(counts) for name, counts in sorted(self._streams.items())}
            flow = dict(self._flow)
        totals = {name: sum(c[name] for c in streams.values()) for name in STREAM_COUNTS}
        return {"streams": streams, **flow, **totals}

    def merge(self, counts: dict[str, Any]) -> None:
        """Add counts in the shape of :meth:`as_dict` (a cluster member's report)."""
        for stream, values in counts.get("streams", {}).items():
            self.add(stream, **values)
        self.add(**{name: int(counts.get(name, 0)) for name in FLOW_COUNTS})

    def __getstate__(self) -> dict[str, Any]:
        return self.as_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]
        self.merge(state)

    def __repr__(self) -> str:
        return f"FlowStats({self.as_dict()})"
