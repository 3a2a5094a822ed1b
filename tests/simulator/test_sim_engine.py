"""The engine: plant files, states and events, shifts, planned downtime and injected faults."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest

from plantstream.contract import Codec, MachineEvent, MachineEventType, PartResult, Quality
from plantstream.contract.machine_tags import MachineTag
from plantstream.simulator.engine import PlantSimulator, snapshot_telemetry, utc_ms
from plantstream.simulator.ground_truth import GroundTruthLog, read_ground_truth
from plantstream.simulator.plant_config import (
    DEFAULT_PLANT_FILE,
    FaultConfig,
    PlantConfigError,
    ScheduledFault,
    load_plant,
    parse_plant,
)

MONDAY_8 = utc_ms(2026, 1, 5, 8, 0)


def _line1(d: dict) -> list[dict]:
    return d["sites"]["plant-1"]["areas"]["machining"]["lines"]["line-1"]["machines"]


def _raw() -> dict:
    import yaml

    return yaml.safe_load(DEFAULT_PLANT_FILE.read_text())


def test_the_shipped_plant_loads_with_every_protocol() -> None:
    plant = load_plant()
    machines = plant.machines()
    assert len(machines) == 12
    assert {m.protocol for m in machines} == {"opcua", "mqtt", "modbus"}
    endpoints = {e.machine.machine_id: e for e in plant.machine_endpoints()}
    assert endpoints["cnc-mill-001"].url.startswith("opc.tcp://127.0.0.1:4840/plantstream/")
    assert endpoints["cnc-mill-001"].opcua_path == ("Plant", "plant-1", "machining", "line-1", "cnc-mill-001")
    assert endpoints["robot-cell-003"].mqtt_topic == "plantstream/v1/plant-1/machining/line-1/robot-cell-003/telemetry"
    # A press's register map: every signal, and the controller's status block (contract.machine_tags).
    registers = set(endpoints["press-002"].registers)
    assert registers >= set(endpoints["press-002"].machine.signals)
    assert registers - set(endpoints["press-002"].machine.signals) == set(MachineTag) - {MachineTag.STOP_REASON_TEXT}
    gateway = plant.gateway_config()
    assert gateway["site"] == "plant-1" and len(gateway["machines"]) == 12
    assert {m["endpoint"].split(":")[0] for m in gateway["machines"]} == {"opc.tcp", "mqtt", "modbus"}


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda d: _line1(d)[0].update(protocol="ftp"),
         "sites.plant-1.areas.machining.lines.line-1.machines[0].protocol"),
        (lambda d: d["endpoints"]["opcua-machining"].update(port=70000), "endpoints.opcua-machining.port"),
        (lambda d: d["machine_types"]["press"]["registers"]["pressure"].update(address=1),
         "machine_types.press.registers"),
        (lambda d: _line1(d)[1].update(unit_id=2),
         "unit_id 2 already used"),
        (lambda d: _line1(d)[0].update(endpoint="nope"),
         "endpoint 'nope' is not in endpoints"),
        (lambda d: d["shifts"][0].update(start="25:00"), "shifts[0].start"),
        (lambda d: d["machine_types"]["press"]["registers"].pop("pressure"), "lacks ['pressure']"),
    ],
)  # fmt: skip
def test_a_bad_plant_file_fails_naming_the_key(edit, key: str) -> None:
    data = _raw()
    edit(data)
    with pytest.raises(PlantConfigError) as err:
        parse_plant(data)
    assert key in str(err.value), str(err.value)


def _run(plant, minutes: float, tmp_path: Path, start_ms: int = MONDAY_8, name: str = "gt"):
    log = GroundTruthLog(tmp_path / f"{name}.jsonl")
    sim = PlantSimulator(plant, start_ms, log)
    snapshots = [sim.step() for _ in range(int(minutes * 60 / plant.sample_period_s))]
    log.close()
    return sim, snapshots, read_ground_truth(tmp_path / f"{name}.jsonl")


def test_same_seed_same_plant_other_seed_other_plant(tmp_path) -> None:
    plant = load_plant()

    def values(snapshots) -> list:
        return [tuple(r.values.values()) for s in snapshots for r in s.readings]

    first = values(_run(plant, 10, tmp_path, name="a")[1])
    assert first == values(_run(plant, 10, tmp_path, name="b")[1])
    assert first != values(_run(plant.model_copy(update={"seed": 7}), 10, tmp_path, name="c")[1])


def test_states_events_parts_and_energy_agree_with_ground_truth(tmp_path) -> None:
    plant = load_plant().with_faults(FaultConfig())
    _sim, snapshots, truth = _run(plant, 8 * 60, tmp_path)  # 08:00-16:00: includes every cleaning stop
    events = [e for s in snapshots for e in s.events]
    parts = [p for s in snapshots for p in s.parts]
    kinds = Counter(e.event_type for e in events)
    failures = [t for t in truth if t.kind == "failure"]
    assert failures, "eight hours of twelve machines must see failures"
    failure_stops = [e for e in events if e.event_type is MachineEventType.FAULT_RAISED]
    # One stop per failing cycle (a cycle may violate several rules at once).
    assert len(failure_stops) == len({(t.machine_id, t.ts) for t in failures})
    assert kinds[MachineEventType.CYCLE_COMPLETED] == len(parts) > 1000
    scrap = [p for p in parts if p.result is PartResult.SCRAP]
    assert 0.01 < len(scrap) / len(parts) < 0.15
    failed_parts = {p.defect_code for p in scrap} & {"TWF", "HDF", "PWF", "OSF", "RNF"}
    assert failed_parts, "the part in the machine when it fails is scrap, coded with the failure mode"
    planned = [t for t in truth if t.kind == "planned_downtime"]
    assert {t.mode for t in planned} == {"cleaning-l1", "cleaning-l2", "cleaning-l3"}
    assert len(planned) == 12 and all(t.duration_s == 1800 for t in planned)
    maint = [e for e in events if e.event_type is MachineEventType.MAINTENANCE_STARTED]
    assert sum(e.reason.startswith("planned:") for e in maint) == 12
    # During a cleaning stop line-1 is in maintenance (a machine under repair stays "stopped":
    # the repair outranks the schedule) and draws standby power only; line-2 produces.
    cleaning = next(s for s in snapshots if s.ts >= utc_ms(2026, 1, 5, 10, 10))
    line1 = [r for r in cleaning.readings if r.machine.line == "line-1"]
    assert {r.state for r in line1} <= {"maintenance", "stopped"}
    assert sum(r.state == "maintenance" for r in line1) >= 2
    assert any(r.state == "running" for r in cleaning.readings if r.machine.line == "line-2")
    assert all(r.values["power"] == pytest.approx(0.15) for r in line1)
    # Energy meters only count up; sequence numbers are gap-free per machine and stream.
    energy = [e for s in snapshots for e in s.energy if e.machine_id == "cnc-mill-001"]
    assert len(energy) == 8 * 60
    assert all(b.energy_kwh >= a.energy_kwh for a, b in itertools.pairwise(energy))
    assert [e.seq for e in energy] == list(range(len(energy)))
    mine = [e.seq for e in events if e.machine_id == "cnc-mill-001"]
    assert mine == list(range(len(mine)))
    codec = Codec(MachineEvent)
    assert codec.decode(codec.encode(events[0])) == events[0]


def test_off_shift_machines_stop_and_restart(tmp_path) -> None:
    plant = load_plant().model_copy(
        update={"shifts": parse_plant({**_raw(), "shifts": [{"name": "day", "start": "08:00", "end": "08:10"}]}).shifts}
    )
    _sim, snapshots, _truth = _run(plant.with_faults(FaultConfig()), 15, tmp_path, start_ms=MONDAY_8)
    late = snapshots[-1]
    assert {r.state for r in late.readings} == {"stopped"}
    stops = [e for s in snapshots for e in s.events if e.event_type is MachineEventType.MACHINE_STOPPED]
    assert sum(e.reason == "off_shift" for e in stops) == 12


def test_injected_sensor_and_device_faults_show_in_readings_and_ground_truth(tmp_path) -> None:
    scheduled = [
        ScheduledFault(at_s=60, machine="cnc-mill-001", kind="stuck", signal="torque", duration_s=120),
        ScheduledFault(at_s=60, machine="cnc-mill-005", kind="dropout", signal="vibration", duration_s=60),
        ScheduledFault(at_s=60, machine="robot-cell-003", kind="clock_skew", duration_s=60, skew_s=-45),
        ScheduledFault(at_s=90, machine="cnc-mill-009", kind="spike", signal="vibration", magnitude=8),
        ScheduledFault(at_s=60, machine="press-002", kind="offline", duration_s=30),
        ScheduledFault(at_s=60, machine="robot-cell-007", kind="offline", duration_s=30),
    ]
    plant = load_plant().with_faults(FaultConfig(scheduled=scheduled))
    _sim, snapshots, truth = _run(plant, 4, tmp_path)
    by_ts = {s.ts: {r.machine.machine_id: r for r in s.readings} for s in snapshots}
    t0 = snapshots[0].ts - 1000
    during = [by_ts[t0 + k * 1000] for k in range(62, 178)]
    after = by_ts[t0 + 200_000]
    # stuck: identical values for two minutes while the real torque moves
    stuck = {r["cnc-mill-001"].values["torque"] for r in during}
    assert len(stuck) == 1 and len({r["cnc-mill-005"].values["torque"] for r in during}) > 10
    assert after["cnc-mill-001"].values["torque"] not in stuck or after["cnc-mill-001"].state != "running"
    # dropout: no value and bad quality, other signals fine
    drop = by_ts[t0 + 90_000]["cnc-mill-005"]
    assert drop.values["vibration"] is None and drop.quality["vibration"] is Quality.BAD
    assert drop.quality["torque"] is Quality.GOOD
    # clock skew: the device's clock is 45 s behind
    skewed = by_ts[t0 + 90_000]["robot-cell-003"]
    assert skewed.source_ts == t0 + 90_000 - 45_000
    # spike: one sample far off
    spike_ts = next(t.ts for t in truth if t.mode == "spike")
    spiked, normal = by_ts[spike_ts]["cnc-mill-009"].values["vibration"], by_ts[spike_ts + 1000]["cnc-mill-009"]
    assert spiked > 4 * (normal.values["vibration"] or 0.2)
    # offline: a Modbus device takes its whole server (and the other unit on it) down; an MQTT device only itself
    snap = next(s for s in snapshots if s.ts == t0 + 75_000)
    assert snap.offline_endpoints == {"modbus-line-1"}
    offline = {r.machine.machine_id for r in snap.readings if not r.online}
    assert offline == {"press-002", "conveyor-004", "robot-cell-007"}
    assert all(r.online for r in by_ts[t0 + 95_000].values())
    assert len(snapshot_telemetry(snap, lambda _m: 0)) == sum(len(r.values) for r in snap.readings if r.online)
    kinds = {(t.kind, t.mode, t.machine_id, t.signal, t.endpoint) for t in truth if t.kind != "failure"}
    assert ("sensor_fault", "stuck", "cnc-mill-001", "torque", "") in kinds
    assert ("sensor_fault", "dropout", "cnc-mill-005", "vibration", "") in kinds
    assert ("sensor_fault", "clock_skew", "robot-cell-003", "", "") in kinds
    assert ("device_fault", "endpoint_offline", "conveyor-004", "", "modbus-line-1") in kinds
    assert ("device_fault", "offline", "robot-cell-007", "", "mqtt-broker") in kinds


@pytest.mark.slow  # a statistical run of ~25 s; the ground-truth test covers faults in the default tier
def test_random_faults_follow_their_rates(tmp_path) -> None:
    faults = FaultConfig.model_validate({"random": {"spike_per_h": 2.0, "stuck_per_h": 0.5}})
    plant = load_plant().with_faults(faults)
    _sim, _snapshots, truth = _run(plant, 6 * 60, tmp_path)
    counts = Counter(t.mode for t in truth if t.kind == "sensor_fault")
    # 12 machines x 6 h: expected 144 spikes (sd 12) and 36 stuck (sd 6)
    assert 100 <= counts["spike"] <= 190 and 18 <= counts["stuck"] <= 56, counts
    assert counts["dropout"] == counts["clock_skew"] == 0
