"""Hand-written plant events for the OEE and twin branch tests, and their decoded batches.

``Plant`` numbers each machine's events per stream (as a gateway does) and keeps them in
production order; ``decoded(...)`` turns contract events into the ``DecodedBatch`` the flow's
decoder would hand a branch (same decoder, same columns).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import yaml

from plantstream.contract import Codec, EnergyUsage, MachineEvent, QualityMetric, Telemetry
from plantstream.contract.events import Alert, MachineEventType, PartResult, _Event
from plantstream.contract.streams import ENERGY_STREAM, EVENTS_STREAM, QUALITY_STREAM, TELEMETRY_STREAM, StreamSpec
from plantstream.contract.topics import message_key
from plantstream.domain.machine_state import transition_events
from plantstream.streaming.kafka_source import RawBatch
from plantstream.streaming.stream_decode import DecodedBatch, StreamDecoder

SPECS = {s.name: s for s in (TELEMETRY_STREAM, EVENTS_STREAM, QUALITY_STREAM, ENERGY_STREAM)}
SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS


def day_ms(days_ago: int = 1) -> int:
    """Midnight UTC ``days_ago`` days before today (recent: the hot store's TTL keeps it)."""
    today = dt.datetime.now(dt.UTC).date()
    day = today - dt.timedelta(days=days_ago)
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


@dataclass
class Plant:
    """Events of a few machines, numbered per machine and stream, in the order they are made."""

    site: str = "plant-1"
    area: str = "machining"
    lines: dict[str, str] = field(default_factory=dict)  # machine -> line
    events: list[tuple[str, _Event]] = field(default_factory=list)  # (stream, event)
    _seq: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    _state: dict[str, tuple[str, str]] = field(default_factory=dict)

    def _envelope(self, machine: str, stream: str, ts: int) -> dict:
        seq = self._seq[machine, stream]
        self._seq[machine, stream] += 1
        line = self.lines.setdefault(machine, "line-1")
        return {
            "site": self.site,
            "area": self.area,
            "line": line,
            "machine_id": machine,
            "seq": seq,
            "source_ts": ts,
            "read_ts": ts + 5,
            "ingest_ts": ts + 10,
        }

    def state(self, machine: str, ts: int, state: str, reason: str = "") -> None:
        """The machine moves into ``state`` at ``ts`` (the events ``transition_events`` gives)."""
        old = self._state.get(machine)
        for change in transition_events(old[0] if old else None, old[1] if old else "", state, reason):
            self.events.append(
                (
                    "events",
                    MachineEvent(
                        **self._envelope(machine, "events", ts),
                        event_type=change.event_type,
                        state=change.state,
                        reason=change.reason,
                        attributes=change.attributes,
                    ),
                )
            )
        self._state[machine] = (state, reason)

    def part(self, machine: str, ts: int, good: bool = True, defect: str | None = None) -> None:
        seq = self._seq[machine, "quality"]
        self.events.append(
            (
                "events",
                MachineEvent(
                    **self._envelope(machine, "events", ts),
                    event_type=MachineEventType.CYCLE_COMPLETED,
                    state="running",
                    attributes={"part_id": f"{machine}-{seq}"},
                ),
            )
        )
        self.events.append(
            (
                "quality",
                QualityMetric(
                    **self._envelope(machine, "quality", ts),
                    part_id=f"{machine}-{seq}",
                    result=PartResult.GOOD if good else PartResult.SCRAP,
                    defect_code=None if good else (defect or "visual"),
                ),
            )
        )

    def energy(self, machine: str, ts: int, kwh: float = 1.0) -> None:
        self.events.append(
            ("energy", EnergyUsage(**self._envelope(machine, "energy", ts), power_kw=2.0, energy_kwh=kwh))
        )

    def reading(self, machine: str, ts: int, signal: str, value: float | None, quality: str = "good") -> None:
        self.events.append(
            (
                "telemetry",
                Telemetry(
                    **self._envelope(machine, "telemetry", ts), signal=signal, value=value, unit="", quality=quality
                ),
            )
        )

    def alert(self, machine: str, ts: int, **fields) -> None:
        self.events.append(("alerts", Alert(**self._envelope(machine, "alerts", ts), **fields)))

    def by_stream(self) -> dict[str, list[_Event]]:
        out: dict[str, list[_Event]] = defaultdict(list)
        for stream, event in sorted(self.events, key=lambda se: se[1].event_ts):  # time order, stable
            out[stream].append(event)
        return out

    def payloads(self) -> list[tuple[str, bytes, bytes]]:
        """``(stream, key, value)`` in time order (what a plant hands to Kafka)."""
        codecs: dict[type, Codec] = {}
        out = []
        for stream, event in sorted(self.events, key=lambda se: se[1].event_ts):
            codec = codecs.setdefault(type(event), Codec(type(event)))
            out.append((stream, message_key(event.machine_id), codec.encode(event)))
        return out


def decoded(spec: StreamSpec, events: list[_Event], *, partition: int = 0, first_offset: int = 0) -> DecodedBatch:
    """``events`` as the flow's decoder hands them to a branch (one Kafka batch of ``spec``'s topic)."""
    codec = Codec(spec.payload)
    values = [codec.encode(e) for e in events]
    raw = RawBatch(
        f"t.{spec.topic.name}",
        partition,
        np.arange(first_offset, first_offset + len(values), dtype=np.int64),
        [message_key(e.machine_id) for e in events],
        values,
    )
    return StreamDecoder(spec, max_event_time_ahead_s=300).decode(raw)


def batches(plant: Plant, size: int, *, specs: dict[str, StreamSpec] | None = None) -> list[DecodedBatch]:
    """Every stream of ``plant`` cut into batches of ``size`` events, interleaved stream by stream
    (the way the flow's independent sources hand them over)."""
    specs = specs or SPECS
    per_stream = {name: events for name, events in plant.by_stream().items() if name in specs}
    offsets = dict.fromkeys(per_stream, 0)
    out = []
    while any(offsets[n] < len(e) for n, e in per_stream.items()):
        for name, events in per_stream.items():
            start = offsets[name]
            if start < len(events):
                out.append(decoded(specs[name], events[start : start + size], first_offset=start))
                offsets[name] = start + size
    return out


def plant_file(tmp_path, machines: dict[str, tuple[str, str, float]], shifts: list[dict]) -> str:
    """A plant YAML with ``machines`` (id -> (type, line, cycle_s per type)) and ``shifts``; its path."""
    types: dict[str, dict] = {}
    lines: dict[str, list] = defaultdict(list)
    for machine, (kind, line, cycle) in machines.items():
        types[kind] = {"cycle_s": cycle}
        lines[line].append({"id": machine, "type": kind})
    doc = {
        "name": "test",
        "machine_types": types,
        "sites": {"plant-1": {"areas": {"machining": {"lines": {ln: {"machines": ms} for ln, ms in lines.items()}}}}},
        "shifts": shifts,
    }
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)
