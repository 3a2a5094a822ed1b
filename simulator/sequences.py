"""Per-machine sequence numbers that survive restarts.

Each machine's telemetry is numbered 0, 1, 2, ... across runs; the sinks deduplicate
on (machine_id, seq) and gaps are counted on it, so a restart must continue the
numbering, never reuse it.  The file is replaced atomically and only after the events
it covers were acknowledged by Kafka.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class SequenceStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._next: dict[str, int] = json.loads(path.read_text()) if path.exists() else {}

    def take(self, machine_id: str) -> int:
        seq = self._next.get(machine_id, 0)
        self._next[machine_id] = seq + 1
        return seq

    def peek(self) -> dict[str, int]:
        return dict(self._next)

    def commit(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._next, sort_keys=True))
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        tmp.replace(self.path)
