"""What the simulator must remember across runs: sequence numbers and its clock.

Each machine's telemetry is numbered 0, 1, 2, ... across runs; the sinks deduplicate
on (machine_id, seq) and gaps are counted on it, so a restart must continue the
numbering, never reuse it.  The simulated clock also continues: a run starts where the
previous one ended (or ``simulated_minutes`` before now, whichever is later), so one
machine never reports two different readings for the same instant.

The file is replaced atomically and only after Kafka acknowledged every event it
covers: a crash re-sends (the sinks deduplicate) rather than skips.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class SimulatorCheckpoint:
    def __init__(self, path: Path) -> None:
        self.path = path
        state = json.loads(path.read_text()) if path.exists() else {}
        self._next: dict[str, int] = dict(state.get("next_seq", {}))
        self.clock_ms: int | None = state.get("clock_ms")

    def take(self, machine_id: str) -> int:
        seq = self._next.get(machine_id, 0)
        self._next[machine_id] = seq + 1
        return seq

    def peek(self) -> dict[str, int]:
        return dict(self._next)

    def commit(self, clock_ms: int) -> None:
        self.clock_ms = clock_ms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"next_seq": self._next, "clock_ms": clock_ms}, sort_keys=True))
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(self.path)
