"""The simulator's ground-truth log: what really happened in the plant.

Failures, maintenance, injected faults and planned downtime, one JSON object per line.
Later waves use it for predictive-maintenance labels and to score alerts, so it is
written as events happen and never rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

GroundTruthKind = Literal["failure", "maintenance", "sensor_fault", "device_fault", "planned_downtime"]


class GroundTruthEntry(msgspec.Struct, frozen=True, kw_only=True):
    ts: int  # epoch ms UTC (simulated time)
    machine_id: str
    kind: GroundTruthKind
    mode: str  # failures: TWF/HDF/PWF/OSF/RNF; sensor faults: stuck/spike/dropout/clock_skew; ...
    duration_s: float = 0.0
    detail: dict[str, float] = {}
    signal: str = ""  # sensor faults: the faulty signal
    endpoint: str = ""  # device faults: the endpoint that went offline


class GroundTruthLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._encoder = msgspec.json.Encoder()
        self._handle = path.open("ab")

    def write(self, entry: GroundTruthEntry) -> None:
        self._handle.write(self._encoder.encode(entry) + b"\n")

    def flush(self) -> None:
        """Make entries visible to readers now (a served plant runs for hours)."""
        self._handle.flush()

    def close(self) -> None:
        self._handle.flush()
        self._handle.close()


def read_ground_truth(path: Path) -> list[GroundTruthEntry]:
    if not path.exists():
        return []
    decoder = msgspec.json.Decoder(GroundTruthEntry)
    return [decoder.decode(line) for line in path.read_bytes().splitlines() if line]
