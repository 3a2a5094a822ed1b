"""Machine controller tags -> machine events, parts and energy readings, counted once.

Real machines expose a PackML state tag, part counters and an energy meter
(:mod:`plantstream.contract.machine_tags`); the gateway turns their *changes* into
contract events:

* a state or stop-reason change -> ``MachineEvent`` (``MachineStarted``,
  ``MachineStopped`` with its reason, ``FaultRaised``, ``MaintenanceStarted/Ended``;
  the one rule in :func:`plantstream.domain.machine_state.transition_events`); the first
  state seen of a machine is reported too (``initial``), so a machine's history always
  starts with a state;
* a processed-counter increment of *n* -> *n* parts, each a ``CycleCompleted`` event and a
  ``QualityMetric`` (good, or scrap for as many as the defective counter went up), for
  machines whose parts come from counters; machines that publish one inspection result
  per part (MQTT) report parts from those instead (:class:`PartReading`), never both;
* the energy meter -> one ``EnergyUsage`` per ``energy_interval`` of event time.

No part is counted twice or lost:

* what the tracker remembers per machine (last state, counter values, undistributed
  defects, roll-over epoch, last meter reading) is written in the **same SQLite
  transaction** as the events it produced (like the sequence numbers), so a gateway
  killed mid-increment restarts exactly where its last commit left it: an increment it
  had not committed is seen again in the next read, one it had committed is not;
* a counter that goes down by more than half its range rolled over (PackML AccCount:
  2,147,483,647 -> 0); one that comes back near 0 (at most :data:`RESET_MAX_PARTS`) was
  reset by the device (power cycle): the parts since are counted from 0; one that goes
  back anywhere else (a replaced controller, a restored configuration) cannot say how
  many parts were made: its new value is taken as a baseline and the jump is logged as a
  warning, never turned into invented parts.  All three bump the machine's counter epoch,
  which is part of every counter-derived part id (``<machine>:<epoch>:<counter>``), so
  ids stay unique;
* the first counter value ever seen of a machine is a baseline: parts made before the
  gateway first looked are not invented;
* a defective increment is attributed to the next processed part(s): a controller that
  writes its tags one by one increments the defective counter no later than the
  processed one (docs/edge-protocols.md), and a read that falls between the two then
  carries the defect over instead of losing it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from plantstream.contract import MachineEventType
from plantstream.contract.machine_tags import COUNTER_MODULUS, MachineTag, machine_state_of, stop_reason_text
from plantstream.domain.machine_state import transition_events
from plantstream.edge.collectors.base import PartReading, StatusReading

log = logging.getLogger(__name__)
PartsFrom = Literal["counters", "inspections"]
#: A counter that went down to at most this was reset to 0 by the device and counted up since.
RESET_MAX_PARTS = 1_000


@dataclass
class MachineMemory:
    """What the tracker remembers of one machine between reads (persisted)."""

    state: str | None = None
    reason: str = ""
    processed: int | None = None
    defective: int | None = None
    scrap_pending: int = 0
    counter_epoch: int = 0
    status_ts: int | None = None  # event time of the latest status taken (older re-deliveries are ignored)
    status_read_ts: int | None = None  # when the gateway read it
    part_ts: int | None = None  # event time of the latest inspection result taken
    energy_ts: int | None = None  # event time of the latest EnergyUsage emitted


@dataclass(frozen=True, slots=True)
class Derived:
    """One contract event to sequence and buffer: its stream and its fields besides the envelope."""

    stream: Literal["events", "quality", "energy"]
    fields: dict[str, Any]
    source_ts: int | None
    read_ts: int


@dataclass(frozen=True, slots=True)
class CounterStep:
    """How far a counter moved between two reads."""

    count: int
    restarted: bool = False  # rolled over, reset or jumped back: part ids need a new epoch
    jumped_back: bool = False  # went back, but neither rolled over nor reset: unknown parts


def counter_step(last: int | None, now: int, modulus: int = COUNTER_MODULUS) -> CounterStep:
    """Parts counted between a counter at ``last`` and at ``now`` (``last`` None: baseline).

    Down by more than half the range: a roll-over (``now + modulus - last``); down to at
    most :data:`RESET_MAX_PARTS`: the device reset its counter (``now`` parts since 0);
    down anywhere else: no parts, a new baseline.
    """
    if last is None or now == last:
        return CounterStep(0)
    if now > last:
        return CounterStep(now - last)
    if last - now > modulus // 2:
        return CounterStep(now + modulus - last, restarted=True)
    if now <= RESET_MAX_PARTS:
        return CounterStep(now, restarted=True)
    return CounterStep(0, restarted=True, jumped_back=True)


@dataclass
class MachineTracker:
    energy_interval_ms: int
    parts_from: dict[str, PartsFrom] = field(default_factory=dict)
    memory: dict[str, MachineMemory] = field(default_factory=dict)
    _dirty: set[str] = field(default_factory=set)

    # -- persistence (inside the buffer's transaction, like the sequence numbers) ---------

    @staticmethod
    def create_schema(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS machine_memory (machine_id TEXT PRIMARY KEY, memory TEXT NOT NULL)")

    def load(self, conn: sqlite3.Connection) -> None:
        self.memory = {m: MachineMemory(**json.loads(j)) for m, j in conn.execute("SELECT * FROM machine_memory")}
        self._dirty.clear()

    def persist(self, conn: sqlite3.Connection) -> None:
        if self._dirty:
            conn.executemany(
                "INSERT INTO machine_memory VALUES (?, ?)"
                " ON CONFLICT (machine_id) DO UPDATE SET memory = excluded.memory",
                [(m, json.dumps(asdict(self.memory[m]))) for m in self._dirty],
            )
        self._dirty.clear()

    def _memory(self, machine_id: str) -> MachineMemory:
        self._dirty.add(machine_id)
        return self.memory.setdefault(machine_id, MachineMemory())

    # -- observing ---------------------------------------------------------------------

    def observe(self, observation: StatusReading | PartReading) -> list[Derived]:
        if isinstance(observation, PartReading):
            return self._part(observation)
        return self._status(observation)

    def _status(self, status: StatusReading) -> list[Derived]:
        mem = self._memory(status.machine_id)
        event_ts = status.source_ts if status.source_ts is not None else status.read_ts
        if mem.status_ts is not None and event_ts < mem.status_ts:
            return []  # a re-delivered older status (MQTT after a reconnect): already taken
        mem.status_ts = event_ts
        mem.status_read_ts = status.read_ts
        tags = status.tags
        out: list[Derived] = []
        if self.parts_from.get(status.machine_id, "counters") == "counters":
            out += self._counted_parts(status, mem)
        if MachineTag.STATE in tags:
            state = machine_state_of(int(tags[MachineTag.STATE]), _int_or_none(tags.get(MachineTag.UNIT_MODE)))
            reason = "" if state == "running" else _reason(tags)
            for change in transition_events(mem.state, mem.reason, state, reason):
                fields = {"event_type": change.event_type, "state": change.state, "reason": change.reason}
                out.append(
                    Derived("events", {**fields, "attributes": change.attributes}, status.source_ts, status.read_ts)
                )
            mem.state, mem.reason = state, reason
        if MachineTag.ENERGY_KWH in tags and (
            mem.energy_ts is None or event_ts - mem.energy_ts >= self.energy_interval_ms
        ):
            energy = {
                "energy_kwh": float(tags[MachineTag.ENERGY_KWH]),
                "power_kw": float(tags.get(MachineTag.POWER_KW, 0.0)),
            }
            out.append(Derived("energy", energy, status.source_ts, status.read_ts))
            mem.energy_ts = event_ts
        return out

    def _counted_parts(self, status: StatusReading, mem: MachineMemory) -> list[Derived]:
        tags = status.tags
        if MachineTag.PARTS_PROCESSED not in tags:
            return []
        processed = int(tags[MachineTag.PARTS_PROCESSED])
        made = counter_step(mem.processed, processed)
        if made.jumped_back:
            log.warning(
                "part counter of %s went back from %s to %s (no roll-over, no reset to 0): taking it as a new "
                "baseline; parts made in between are unknown",
                status.machine_id,
                mem.processed,
                processed,
            )
        if MachineTag.PARTS_DEFECTIVE in tags:
            defective = int(tags[MachineTag.PARTS_DEFECTIVE])
            mem.scrap_pending += counter_step(mem.defective, defective).count
            mem.defective = defective
        if made.restarted:
            mem.counter_epoch += 1
        mem.processed = processed
        if not made.count:
            return []
        scrap = min(made.count, mem.scrap_pending)
        mem.scrap_pending -= scrap
        out = []
        for i in range(made.count):
            counter = (processed - made.count + 1 + i) % COUNTER_MODULUS
            result = "scrap" if i >= made.count - scrap else "good"
            part_id = f"{status.machine_id}:{mem.counter_epoch}:{counter}"
            out += _part_events(mem, part_id, result, None, "", {}, status.source_ts, status.read_ts, counter=counter)
        return out

    def _part(self, part: PartReading) -> list[Derived]:
        mem = self._memory(part.machine_id)
        event_ts = part.source_ts if part.source_ts is not None else part.read_ts
        if mem.part_ts is not None and event_ts <= mem.part_ts:
            return []  # a re-delivered inspection result
        mem.part_ts = event_ts
        return _part_events(
            mem,
            part.part_id,
            part.result,
            part.defect_code,
            part.product_variant,
            part.measurements,
            part.source_ts,
            part.read_ts,
        )


def _part_events(  # noqa: PLR0917 - internal, the fields of one part
    mem: MachineMemory,
    part_id: str,
    result: str,
    defect_code: str | None,
    variant: str,
    measurements: dict[str, float],
    source_ts: int | None,
    read_ts: int,
    *,
    counter: int | None = None,
) -> list[Derived]:
    attributes = {"part_id": part_id, "result": result}
    if counter is not None:
        attributes["counter"] = str(counter)
    cycle = {
        "event_type": MachineEventType.CYCLE_COMPLETED,
        "state": mem.state or "running",
        "reason": None,
        "attributes": attributes,
    }
    quality = {
        "part_id": part_id,
        "result": result,
        "defect_code": defect_code,
        "product_variant": variant,
        "measurements": measurements,
    }
    return [Derived("events", cycle, source_ts, read_ts), Derived("quality", quality, source_ts, read_ts)]


def _int_or_none(value: float | str | None) -> int | None:
    return None if value is None else int(value)


def _reason(tags: dict[str, float | str]) -> str:
    code = int(tags.get(MachineTag.STOP_REASON, 0))
    text = tags.get(MachineTag.STOP_REASON_TEXT)
    return stop_reason_text(code, str(text) if text else None)
