"""What the load generator must remember across runs: sequence numbers, its clock, and a
run it began but did not finish.

Each machine's events are numbered 0, 1, 2, ... per stream across runs; the sinks
deduplicate on (machine_id, seq) and gaps are counted on it, so a restart must continue
the numbering, never reuse it.  The simulated clock also continues: a run starts where
the previous one ended, so one machine never reports two different readings for the
same instant.

The file is replaced atomically and only after every event of the run was verified in
Kafka: a failed run leaves the numbering and the clock where they were, plus the wall
time it began (:attr:`in_progress_since_ms`), so the next attempt regenerates the *same*
events (same seed, start and numbers) and sends only those Kafka does not hold yet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _key(machine_id: str, stream: str) -> str:
    return machine_id if stream == "telemetry" else f"{stream}:{machine_id}"


class SimulatorCheckpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        state = json.loads(path.read_text()) if path.exists() else {}
        # Telemetry keeps plain machine ids as keys (files of the telemetry-only generator).
        self._committed: dict[str, int] = dict(state.get("next_seq", {}))
        self._next = dict(self._committed)
        self.clock_ms: int | None = state.get("clock_ms")
        self.in_progress_since_ms: int | None = state.get("in_progress_since_ms")
        #: The unfinished run's plan ``{"start_ms", "steps", "machines"}``, to regenerate it exactly.
        self.in_progress_run: dict[str, int] | None = state.get("in_progress_run")

    def take(self, machine_id: str, stream: str = "telemetry") -> int:
        key = _key(machine_id, stream)
        seq = self._next.get(key, 0)
        self._next[key] = seq + 1
        return seq

    def peek(self) -> dict[str, int]:
        """The committed next numbers (what a run starts from)."""
        return dict(self._committed)

    def begin(self, wall_ms: int, run: dict[str, int]) -> int:
        """Record that ``run`` begins now, unless a failed one is still to be finished
        (then :attr:`in_progress_run` is the plan to redo, not ``run``).

        Returns the wall time from which Kafka may hold this run's events: the earlier
        attempt's, if there was one.
        """
        if self.in_progress_since_ms is None:
            self.in_progress_since_ms = wall_ms
            self.in_progress_run = dict(run)
            self._write(self._committed, self.clock_ms)
        return self.in_progress_since_ms

    def commit(self, clock_ms: int) -> None:
        """Every event taken since the last commit is in Kafka: move on."""
        self.clock_ms = clock_ms
        self.in_progress_since_ms = None
        self.in_progress_run = None
        self._committed = dict(self._next)
        self._write(self._committed, clock_ms)

    def _write(self, next_seq: dict[str, int], clock_ms: int | None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        state = {
            "next_seq": next_seq,
            "clock_ms": clock_ms,
            "in_progress_since_ms": self.in_progress_since_ms,
            "in_progress_run": self.in_progress_run,
        }
        tmp.write_text(json.dumps(state, sort_keys=True))
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(self.path)
