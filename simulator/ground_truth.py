"""The simulator's ground-truth log: what really happened in the plant.

One JSON object per line, written as things happen and never rewritten:

* ``failure`` (mode TWF/HDF/PWF/OSF/RNF, repair time), ``maintenance`` (tool change),
  ``planned_downtime``, ``sensor_fault`` and ``device_fault`` (injected faults): labels
  for predictive maintenance and the answer key for alert scoring;
* ``state`` (each machine's state from the start and every change, with its reason): the
  state intervals the lake's OEE and downtime must reproduce;
* ``part`` (every part: result as mode, defect code as reason, part id as signal, the
  controller's processed counter after it in ``detail``): what good + scrap must add up to;
* ``energy`` (each machine's meter reading every simulated minute): the energy totals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

GroundTruthKind = Literal[
    "failure", "maintenance", "sensor_fault", "device_fault", "planned_downtime", "state", "part", "energy"
]


class GroundTruthEntry(msgspec.Struct, frozen=True, kw_only=True):
    ts: int  # epoch ms UTC (simulated time)
    machine_id: str
    kind: GroundTruthKind
    mode: str  # failures: TWF/HDF/PWF/OSF/RNF; sensor faults: stuck/spike/dropout/clock_skew; states; ...
    duration_s: float = 0.0
    detail: dict[str, float] = {}
    signal: str = ""  # sensor faults: the faulty signal; parts: the part id
    endpoint: str = ""  # device faults: the endpoint that went offline
    reason: str = ""  # states: why (failure:TWF, planned:cleaning-l1, off_shift); parts: the defect code


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
