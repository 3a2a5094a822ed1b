"""Live OEE recomputed from the raw events, the way docs/oee.md says to call the OEE function.

The second implementation the streaming tests compare the branch with: state intervals from
the state-entry events of each machine (sorted by event time and seq), the last one lasting
until the machine's latest event of any stream; parts counted by event time; then
``domain.oee.oee`` per machine and window and ``combine`` per line.  Nothing here is shared
with ``streaming/oee_live.py`` except the OEE function itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from plantstream.contract.events import _Event
from plantstream.domain.machine_state import STATE_ENTRY_EVENTS
from plantstream.domain.oee import OeeResult, StateInterval, combine, durations_in_window, oee
from plantstream.simulator.engine import PlantSimulator, snapshot_telemetry
from plantstream.simulator.plant_config import parse_plant


@dataclass
class RawEvents:
    """The raw events of a run, per machine: state entries, parts, latest event time."""

    states: dict[str, list[tuple[int, int, str, str]]] = field(default_factory=lambda: defaultdict(list))
    parts: dict[str, list[tuple[int, bool]]] = field(default_factory=lambda: defaultdict(list))
    horizon: dict[str, int] = field(default_factory=dict)
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def add(self, stream: str, machine: str, seq: int, ts: int, **fields) -> None:
        if (stream, machine, seq) in self.seen:  # a duplicate counts once
            return
        self.seen.add((stream, machine, seq))
        self.horizon[machine] = max(self.horizon.get(machine, ts), ts)
        if stream == "events" and fields["event_type"] in STATE_ENTRY_EVENTS and fields["state"]:
            self.states[machine].append((ts, seq, fields["state"], fields["reason"] or ""))
        elif stream == "quality":
            self.parts[machine].append((ts, fields["result"] == "good"))

    @classmethod
    def of_events(cls, events: Iterable[tuple[str, _Event]]) -> RawEvents:
        raw = cls()
        for stream, e in events:
            extra = {}
            if stream == "events":
                extra = {"event_type": e.event_type.value, "state": e.state, "reason": e.reason}
            elif stream == "quality":
                extra = {"result": e.result.value}
            raw.add(stream, e.machine_id, e.seq, e.event_ts, **extra)
        return raw

    @classmethod
    def of_tables(cls, tables: dict[str, pa.Table]) -> RawEvents:
        """From hot-store ``<stream>_raw`` rows (``event_ts`` as epoch ms integers)."""
        raw = cls()
        for stream, table in tables.items():
            cols = table.to_pydict()
            for i in range(table.num_rows):
                extra = {}
                if stream == "events":
                    extra = {k: cols[k][i] for k in ("event_type", "state", "reason")}
                elif stream == "quality":
                    extra = {"result": cols["result"][i]}
                raw.add(stream, cols["machine_id"][i], cols["seq"][i], cols["event_ms"][i], **extra)
        return raw

    def machine_oee(self, machine: str, start: int, end: int, ideal_cycle_s: float) -> OeeResult | None:
        changes = sorted(self.states.get(machine, []))
        intervals = [
            StateInterval(state, reason, t, changes[i + 1][0] if i + 1 < len(changes) else self.horizon[machine])
            for i, (t, _seq, state, reason) in enumerate(changes)
        ]
        durations = durations_in_window(intervals, start, end)
        parts = [good for t, good in self.parts.get(machine, []) if start <= t < end]
        if not durations and not parts:
            return None
        return oee(durations, ideal_cycle_s=ideal_cycle_s, total_count=len(parts), good_count=sum(parts))

    def line_oee(self, machines: dict[str, float], start: int, end: int) -> OeeResult | None:
        results = [r for m, ideal in machines.items() if (r := self.machine_oee(m, start, end, ideal)) is not None]
        return combine(results) if results else None


def simulated_plant(plant_doc: dict, start_ms: int, steps: int, *, telemetry: bool, seed: int = 7):
    """``(stream, event)`` of a simulated plant (the simulator's engine: physics, failures,
    tool changes, shifts and planned downtime of ``plant_doc``), in production order."""
    plant = parse_plant(plant_doc)
    engine = PlantSimulator(plant, start_ms, seed=seed, faults=False)
    seqs: dict[str, int] = defaultdict(int)

    def take(machine_id: str) -> int:
        seqs[machine_id] += 1
        return seqs[machine_id] - 1

    out = []
    for _ in range(steps):
        snap = engine.step()
        if telemetry:
            out += [("telemetry", e) for e in snapshot_telemetry(snap, take)]
        out += [("events", e) for e in snap.events]
        out += [("quality", e) for e in snap.parts]
        out += [("energy", e) for e in snap.energy]
    return plant, out
