"""The simulation engine: a plant file + physics + shifts + faults -> one snapshot per step.

:class:`PlantSimulator` advances the simulated clock one sample period at a time and
returns a :class:`Snapshot`: what every machine's sensors read (after injected sensor
faults), which endpoints are offline, and the contract events the plant produced in
that step (``MachineEvent`` state changes and cycles, a ``QualityMetric`` per part,
``EnergyUsage`` meter readings).  Everything that really happened - failures,
maintenance, planned downtime and every injected fault - goes to the ground-truth log
as it happens, so later stages can be scored against it.

The protocol servers (:mod:`.protocols`) only turn snapshots into wire formats; this
module knows nothing about sockets, so it is deterministic and fast to test.  Faults
draw from their own random stream: enabling faults never changes the physics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as dtime
from typing import Any

import numpy as np

from plantstream.contract import (
    EnergyUsage,
    MachineEvent,
    MachineEventType,
    PartResult,
    Quality,
    QualityMetric,
    Telemetry,
)
from plantstream.contract.machine_tags import COUNTER_MODULUS, MachineTag, packml_of, stop_reason_id
from plantstream.contract.signals import SIGNALS
from plantstream.domain.machine_state import transition_events
from plantstream.simulator.ground_truth import GroundTruthEntry, GroundTruthLog
from plantstream.simulator.physics import (
    MAINTENANCE,
    RUNNING,
    STATE_NAMES,
    STOPPED,
    PlantPhysics,
)
from plantstream.simulator.plant import IDLE_KW, STANDBY_KW, Machine
from plantstream.simulator.plant_config import PlantConfig, ScheduledFault

READ_DELAY_MS = 5
ENERGY_PERIOD_S = 60.0
SENSOR_FAULTS = ("stuck", "spike", "dropout", "clock_skew")


@dataclass(frozen=True, slots=True)
class MachineStatus:
    """What a machine's controller exposes besides its sensors (``contract.machine_tags``):
    PackML state and mode, the first-out stop reason, the part counters (Int32 AccCount,
    rolling over at 2^31) and the energy meter."""

    state_code: int
    unit_mode: int
    stop_reason_id: int
    stop_reason: str
    parts_processed: int
    parts_defective: int
    energy_kwh: float
    power_kw: float

    def tag_values(self) -> dict[str, int | float | str]:
        """The status as the tags a controller exposes (``MachineTag`` names)."""
        return {
            MachineTag.STATE: self.state_code,
            MachineTag.UNIT_MODE: self.unit_mode,
            MachineTag.STOP_REASON: self.stop_reason_id,
            MachineTag.STOP_REASON_TEXT: self.stop_reason,
            # Defective before processed: a device that writes its tags one by one (OPC UA)
            # never shows a part counted before its defect; the edge relies on that order.
            MachineTag.PARTS_DEFECTIVE: self.parts_defective,
            MachineTag.PARTS_PROCESSED: self.parts_processed,
            MachineTag.ENERGY_KWH: self.energy_kwh,
            MachineTag.POWER_KW: self.power_kw,
        }


@dataclass
class Reading:
    """One machine's sensors at one instant, as its device would serve them."""

    machine: Machine
    source_ts: int  # the device's clock (shifted under a clock-skew fault)
    values: dict[str, float | None]  # None: the sensor dropped out
    quality: dict[str, Quality]
    online: bool  # False: the machine's endpoint is down, nothing may be served
    state: str
    status: MachineStatus


@dataclass
class Snapshot:
    step: int
    ts: int  # true simulated time, epoch ms
    readings: list[Reading]
    offline_endpoints: frozenset[str]
    events: list[MachineEvent] = field(default_factory=list)
    parts: list[QualityMetric] = field(default_factory=list)
    energy: list[EnergyUsage] = field(default_factory=list)
    ground_truth: list[GroundTruthEntry] = field(default_factory=list)
    #: Per machine the ``seq`` of its latest machine event so far (this step's included):
    #: the state its readings of this step were taken under (``Telemetry.state_seq``).
    state_seq: dict[str, int] = field(default_factory=dict)


@dataclass
class _ActiveFault:
    machine_index: int
    kind: str
    until_ms: int
    signal: str = ""
    value: float | None = None  # stuck: the frozen value
    skew_ms: int = 0
    magnitude: float = 5.0


def _minutes(t: dtime) -> int:
    return t.hour * 60 + t.minute


class PlantSimulator:
    """Steps a configured plant; deterministic for a given plant file, seed and start time."""

    def __init__(
        self,
        plant: PlantConfig,
        start_ms: int,
        ground_truth: GroundTruthLog | None = None,
        *,
        seed: int | None = None,
        faults: bool = True,
        controllers: dict[str, dict[str, float]] | None = None,
        take_seq: Callable[[str, str], int] | None = None,
    ) -> None:
        """``controllers``: per machine the ``parts_processed``, ``parts_defective`` and
        ``energy_kwh`` its controller held when the plant last stopped (:meth:`controller_state`):
        a real machine does not reset its counters or its meter when the simulator restarts.
        ``take_seq(machine_id, stream)``: where the events' sequence numbers come from (the
        load generator's durable checkpoint); default: numbered from 0 in this instance."""
        self.plant = plant
        self.machines = plant.machines()
        self.period_ms = round(plant.sample_period_s * 1000)
        self.start_ms = start_ms
        self.now_ms = start_ms
        self.step_no = 0
        self.ground_truth = ground_truth
        seed = plant.seed if seed is None else seed
        self.physics = PlantPhysics(
            [m.product_quality for m in self.machines],
            np.random.default_rng(seed),
            cycle_s=np.array([m.cycle_s for m in self.machines]),
            idle_kw=np.array([IDLE_KW[m.machine_type] for m in self.machines]),
            standby_kw=STANDBY_KW,
        )
        self._fault_rng = np.random.default_rng([seed, 1])
        self._faults_enabled = faults
        self._active: list[_ActiveFault] = []
        self._scheduled = sorted(plant.faults.scheduled, key=lambda f: f.at_s) if faults else []
        self._endpoint_offline_until: dict[str, int] = {}
        self._machine_offline_until = np.zeros(len(self.machines), dtype=np.int64)
        self._index = {m.machine_id: i for i, m in enumerate(self.machines)}
        self._state_seq: dict[str, int] = {}  # machine -> seq of its latest machine event
        self._seq: dict[tuple[str, str], int] = {}
        self._take_seq = take_seq
        self._reasons = ["" for _ in self.machines]
        # Part counters as the controller keeps them (PackML AccCount): never reset by a job,
        # rolling over at 2^31; a plant file may start one near the roll-over (tests).
        counter_rng = np.random.default_rng([seed, 2])
        self.parts_processed = np.array(
            [
                m.counter_start if m.counter_start is not None else int(counter_rng.integers(0, 10**6))
                for m in self.machines
            ],
            dtype=np.int64,
        )
        self.parts_defective = self.parts_processed // 50
        for i, m in enumerate(self.machines):
            kept = (controllers or {}).get(m.machine_id)
            if kept is not None:
                self.parts_processed[i] = int(kept["parts_processed"])
                self.parts_defective[i] = int(kept["parts_defective"])
                self.physics.energy_kwh[i] = float(kept["energy_kwh"])
        # The state every machine starts in is ground truth too (intervals run from it).
        self._pending_gt = [
            GroundTruthEntry(ts=start_ms, machine_id=m.machine_id, kind="state", mode="running") for m in self.machines
        ]
        self._next_energy_ms = start_ms
        self._shifts = [
            (_minutes(dtime.fromisoformat(s.start)), _minutes(dtime.fromisoformat(s.end))) for s in plant.shifts
        ]
        self._downtime = [
            (d.name, _minutes(dtime.fromisoformat(d.start)), d.duration_min, set(d.lines))
            for d in plant.planned_downtime
        ]

    def controller_state(self) -> dict[str, dict[str, float]]:
        """What each machine's controller keeps across a restart (counters and meter)."""
        return {
            m.machine_id: {
                "parts_processed": int(self.parts_processed[i]),
                "parts_defective": int(self.parts_defective[i]),
                "energy_kwh": float(self.physics.energy_kwh[i]),
            }
            for i, m in enumerate(self.machines)
        }

    # -- schedule --------------------------------------------------------------------

    def schedule(self, ts_ms: int) -> tuple[np.ndarray, list[str]]:
        """Per machine: RUNNING (scheduled), STOPPED (off shift) or MAINTENANCE (planned downtime)."""
        n = len(self.machines)
        state = np.full(n, RUNNING, dtype=np.int8)
        reason = ["" for _ in range(n)]
        when = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
        minute = when.hour * 60 + when.minute + when.second / 60
        if self._shifts and not any(
            (start <= minute < end) if start < end else (minute >= start or minute < end) for start, end in self._shifts
        ):
            state[:] = STOPPED
            reason = ["off_shift"] * n
        for name, start, duration, lines in self._downtime:
            if (minute - start) % (24 * 60) < duration:
                for i, m in enumerate(self.machines):
                    if not lines or m.line in lines:
                        state[i] = MAINTENANCE
                        reason[i] = f"planned:{name}"
        return state, reason

    # -- faults ----------------------------------------------------------------------

    def _start_fault(  # noqa: PLR0917 - internal, called from two places
        self, index: int, kind: str, duration_s: float, signal: str | None, skew_s: float, magnitude: float
    ) -> list[GroundTruthEntry]:
        machine = self.machines[index]
        until = self.now_ms + round(duration_s * 1000)
        entries: list[GroundTruthEntry] = []
        if kind == "counter_reset":  # the controller restarted: its counters start from 0 again
            self.parts_processed[index] = 0
            self.parts_defective[index] = 0
            return [GroundTruthEntry(ts=self.now_ms, machine_id=machine.machine_id, kind="device_fault", mode=kind)]
        if kind == "offline":
            endpoint = machine.endpoint or ""
            shared = machine.protocol in ("opcua", "modbus")
            if shared:
                self._endpoint_offline_until[endpoint] = max(self._endpoint_offline_until.get(endpoint, 0), until)
                victims = [i for i, m in enumerate(self.machines) if m.endpoint == endpoint]
            else:
                self._machine_offline_until[index] = max(int(self._machine_offline_until[index]), until)
                victims = [index]
            entries = [
                GroundTruthEntry(
                    ts=self.now_ms,
                    machine_id=self.machines[i].machine_id,
                    kind="device_fault",
                    mode="endpoint_offline" if shared else "offline",
                    duration_s=duration_s,
                    endpoint=endpoint,
                )
                for i in victims
            ]
            return entries
        signal = signal or machine.signals[0]
        fault = _ActiveFault(index, kind, until, signal, skew_ms=round(skew_s * 1000), magnitude=magnitude)
        if kind == "spike":
            fault.until_ms = self.now_ms + 1  # one sample
        self._active.append(fault)
        detail = {"skew_s": skew_s} if kind == "clock_skew" else ({"magnitude": magnitude} if kind == "spike" else {})
        return [
            GroundTruthEntry(
                ts=self.now_ms,
                machine_id=machine.machine_id,
                kind="sensor_fault",
                mode=kind,
                duration_s=0.0 if kind == "spike" else duration_s,
                detail=detail,
                signal="" if kind == "clock_skew" else signal,
            )
        ]

    def _inject_faults(self, dt_s: float) -> list[GroundTruthEntry]:
        entries: list[GroundTruthEntry] = []
        self._active = [f for f in self._active if f.until_ms > self.now_ms]
        elapsed_s = (self.now_ms - self.start_ms) / 1000
        while self._scheduled and self._scheduled[0].at_s <= elapsed_s:
            f: ScheduledFault = self._scheduled.pop(0)
            entries += self._start_fault(self._index[f.machine], f.kind, f.duration_s, f.signal, f.skew_s, f.magnitude)
        if not self._faults_enabled:
            return entries
        rates = self.plant.faults.random
        n = len(self.machines)
        per_kind = {
            "stuck": (rates.stuck_per_h, rates.stuck_s),
            "spike": (rates.spike_per_h, 0.0),
            "dropout": (rates.dropout_per_h, rates.dropout_s),
            "clock_skew": (rates.clock_skew_per_h, rates.clock_skew_s),
            "offline": (rates.offline_per_h, rates.offline_s),
        }
        for kind, (rate, duration) in per_kind.items():
            if rate <= 0:
                continue
            hits = np.flatnonzero(self._fault_rng.random(n) < rate * dt_s / 3600)
            for index in hits:
                machine = self.machines[int(index)]
                if kind == "offline" and machine.protocol == "kafka-direct":
                    continue
                signal = machine.signals[int(self._fault_rng.integers(len(machine.signals)))]
                entries += self._start_fault(int(index), kind, max(duration, 1e-3), signal, rates.skew_s, 5.0)
        return entries

    # -- stepping --------------------------------------------------------------------

    def _seq_next(self, machine_id: str, stream: str) -> int:
        if self._take_seq is not None:
            return self._take_seq(machine_id, stream)
        key = (machine_id, stream)
        seq = self._seq.get(key, 0)
        self._seq[key] = seq + 1
        return seq

    def _envelope(self, m: Machine, ts: int, stream: str) -> dict[str, Any]:
        """Identity, next sequence number of ``stream`` and timestamps, common to every event."""
        stamped = ts + READ_DELAY_MS
        return {
            "site": m.site,
            "area": m.area,
            "line": m.line,
            "machine_id": m.machine_id,
            "seq": self._seq_next(m.machine_id, stream),
            "source_ts": ts,
            "read_ts": stamped,
            "ingest_ts": stamped,
        }

    def _event(self, m: Machine, ts: int, kind: MachineEventType, state: str, reason: str | None, **attrs: str):
        event = MachineEvent(
            **self._envelope(m, ts, "events"),
            event_type=kind,
            state=state,
            reason=reason or None,
            attributes=attrs,
        )
        self._state_seq[m.machine_id] = event.seq
        return event

    def step(self) -> Snapshot:
        """Advance one sample period and report what the plant did and what it serves."""
        dt_s = self.period_ms / 1000
        self.now_ms += self.period_ms
        self.step_no += 1
        ts = self.now_ms
        sched_state, sched_reason = self.schedule(ts)
        physics = self.physics
        failures = physics.step(dt_s, sched_state, sched_reason)
        gt: list[GroundTruthEntry] = []
        events: list[MachineEvent] = []
        for failure in failures:
            gt.append(
                GroundTruthEntry(
                    ts=ts,
                    machine_id=self.machines[failure.machine_index].machine_id,
                    kind="failure",
                    mode=failure.mode,
                    duration_s=failure.repair_s,
                    detail=failure.detail,
                )
            )
        for index in physics.tool_changes:
            gt.append(
                GroundTruthEntry(
                    ts=ts,
                    machine_id=self.machines[index].machine_id,
                    kind="maintenance",
                    mode="tool_change",
                    duration_s=physics.calibration.tool_change_s,
                )
            )
        gt += self._pending_gt
        self._pending_gt = []
        for tr in physics.transitions:
            m = self.machines[tr.machine_index]
            old_reason = self._reasons[tr.machine_index]
            self._reasons[tr.machine_index] = tr.reason
            new_state = STATE_NAMES[tr.new]
            gt.append(GroundTruthEntry(ts=ts, machine_id=m.machine_id, kind="state", mode=new_state, reason=tr.reason))
            for change in transition_events(STATE_NAMES[tr.old], old_reason, new_state, tr.reason):
                events.append(self._event(m, ts, change.event_type, change.state, change.reason, **change.attributes))
            if tr.new == MAINTENANCE and tr.reason.startswith("planned:"):
                name = tr.reason.removeprefix("planned:")
                duration = next(d.duration_min for d in self.plant.planned_downtime if d.name == name) * 60
                gt.append(
                    GroundTruthEntry(
                        ts=ts, machine_id=m.machine_id, kind="planned_downtime", mode=name, duration_s=duration
                    )
                )
        parts: list[QualityMetric] = []
        for index in np.flatnonzero(physics.cycle_done):
            m = self.machines[int(index)]
            cycle = int(physics.cycle_count[index])
            scrapped = bool(physics.scrap[index])
            self.parts_processed[index] = (self.parts_processed[index] + 1) % COUNTER_MODULUS
            if scrapped:
                self.parts_defective[index] = (self.parts_defective[index] + 1) % COUNTER_MODULUS
            part_id = f"{m.machine_id}-{cycle}"
            result = PartResult.SCRAP if scrapped else PartResult.GOOD
            defect = physics.defect.get(int(index), "visual" if scrapped else None)
            gt.append(
                GroundTruthEntry(
                    ts=ts,
                    machine_id=m.machine_id,
                    kind="part",
                    mode=result.value,
                    reason=defect or "",
                    detail={"parts_processed": float(self.parts_processed[index])},
                    signal=part_id,
                )
            )
            events.append(
                self._event(
                    m, ts, MachineEventType.CYCLE_COMPLETED, STATE_NAMES[physics.state[index]], None,
                    cycle=str(cycle), part_id=part_id, result=result.value,
                )
            )  # fmt: skip
            parts.append(
                QualityMetric(
                    **self._envelope(m, ts, "quality"),
                    part_id=part_id,
                    result=result,
                    product_variant=m.product_quality,
                    defect_code=defect,
                    measurements={
                        "torque_nm": round(float(physics.cycle_torque[index]), 3),
                        "speed_rpm": round(float(physics.cycle_speed[index]), 1),
                        "tool_wear_min": round(float(physics.tool_wear[index]), 2),
                    },
                )
            )
        energy: list[EnergyUsage] = []
        if ts >= self._next_energy_ms:
            self._next_energy_ms = ts + round(ENERGY_PERIOD_S * 1000)
            gt += [
                GroundTruthEntry(
                    ts=ts,
                    machine_id=m.machine_id,
                    kind="energy",
                    mode="meter",
                    detail={"energy_kwh": float(physics.energy_kwh[i]), "power_kw": float(physics.power[i])},
                )
                for i, m in enumerate(self.machines)
            ]
            energy = [
                EnergyUsage(
                    **self._envelope(m, ts, "energy"),
                    power_kw=round(float(physics.power[i]), 4),
                    energy_kwh=round(float(physics.energy_kwh[i]), 4),
                )
                for i, m in enumerate(self.machines)
            ]
        gt += self._inject_faults(dt_s)
        readings = self._readings(ts)
        if self.ground_truth is not None:
            for entry in gt:
                self.ground_truth.write(entry)
        offline = frozenset(e for e, until in self._endpoint_offline_until.items() if until > ts)
        return Snapshot(self.step_no, ts, readings, offline, events, parts, energy, gt, dict(self._state_seq))

    def _readings(self, ts: int) -> list[Reading]:
        values = self.physics.signal_values()
        by_machine: dict[int, list[_ActiveFault]] = {}
        for fault in self._active:
            by_machine.setdefault(fault.machine_index, []).append(fault)
        offline_endpoints = {e for e, until in self._endpoint_offline_until.items() if until > ts}
        out = []
        for i, m in enumerate(self.machines):
            vals: dict[str, float | None] = {s: round(float(values[s][i]), 4) for s in m.signals}
            quality = dict.fromkeys(m.signals, Quality.GOOD)
            source_ts = ts
            for fault in by_machine.get(i, ()):
                if fault.kind == "clock_skew":
                    source_ts = ts + fault.skew_ms
                elif fault.signal not in vals:
                    continue
                elif fault.kind == "stuck":
                    if fault.value is None:
                        fault.value = vals[fault.signal]
                    vals[fault.signal] = fault.value
                elif fault.kind == "spike":
                    base = vals[fault.signal] or 0.0
                    spec = SIGNALS[fault.signal]
                    vals[fault.signal] = round(base * fault.magnitude if abs(base) > 1 else spec.valid_max * 0.5, 4)
                elif fault.kind == "dropout":
                    vals[fault.signal] = None
                    quality[fault.signal] = Quality.BAD
            online = self._machine_offline_until[i] <= ts and (m.endpoint not in offline_endpoints)
            state = STATE_NAMES[self.physics.state[i]]
            reason = self._reasons[i]
            code, mode = packml_of(state, reason)
            status = MachineStatus(
                state_code=int(code),
                unit_mode=int(mode),
                stop_reason_id=stop_reason_id(reason) if state != "running" else 0,
                stop_reason=reason if state != "running" else "",
                parts_processed=int(self.parts_processed[i]),
                parts_defective=int(self.parts_defective[i]),
                energy_kwh=round(float(self.physics.energy_kwh[i]), 4),
                power_kw=round(float(self.physics.power[i]), 4),
            )
            out.append(Reading(m, source_ts, vals, quality, online, state, status))
        return out


def snapshot_telemetry(
    snapshot: Snapshot, take_seq, read_delay_ms: int = READ_DELAY_MS, *, ingest_ts: int | None = None
) -> list[Telemetry]:
    """Contract telemetry for every online machine of a snapshot (the kafka-direct view).

    ``take_seq(machine_id) -> int`` numbers readings (e.g. a :class:`.checkpoint.SimulatorCheckpoint`);
    ``ingest_ts`` defaults to the read time (pass the wall clock when producing to Kafka).
    """
    read_ts = snapshot.ts + read_delay_ms
    ingest = read_ts if ingest_ts is None else ingest_ts
    out = []
    for r in snapshot.readings:
        if not r.online:
            continue
        m = r.machine
        for signal, value in r.values.items():
            out.append(
                Telemetry(
                    site=m.site,
                    area=m.area,
                    line=m.line,
                    machine_id=m.machine_id,
                    seq=take_seq(m.machine_id),
                    source_ts=r.source_ts,
                    read_ts=read_ts,
                    ingest_ts=ingest,
                    signal=signal,
                    value=value,
                    unit=SIGNALS[signal].unit,
                    quality=r.quality[signal],
                    state_seq=snapshot.state_seq.get(m.machine_id),
                )
            )
    return out


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    """Epoch ms of a UTC wall time (tests place runs relative to shifts)."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


__all__ = ["MachineStatus", "PlantSimulator", "Reading", "Snapshot", "snapshot_telemetry", "utc_ms"]
