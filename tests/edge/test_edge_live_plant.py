"""The simulator's own values reach Kafka through every protocol, unchanged.

The shipped plant is served live over OPC UA, MQTT and Modbus and collected by the
gateway into a private topic; every step the plant served is recorded (``on_snapshot``).
Each event in Kafka must be a value the plant served: for OPC UA and MQTT the value of
that machine and signal at the event's source timestamp (the device's clock, exact); for
Modbus - no timestamps on the wire - a value the device held during the run, as its
register map encodes it (scale, word order, type).  The same holds for the streams the
gateway derives from the controllers' tags: every energy reading is a meter value the
machine served, and the parts on the quality topic are exactly the parts the plant made
in the run (its ground truth), machine by machine and result by result.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest
from edge_peers import read_topic

from plantstream.cli.live_plant import run_live_plant
from plantstream.contract import EnergyUsage, MachineEvent, Quality, QualityMetric
from plantstream.contract.signals import SIGNALS
from plantstream.contract.topics import ENERGY_USAGE, MACHINE_EVENTS, QUALITY_METRICS, TELEMETRY, topic_name
from plantstream.edge.collectors.modbus import decode, encode
from plantstream.simulator.engine import Snapshot
from plantstream.simulator.plant_config import load_plant

pytestmark = pytest.mark.integration


def test_every_event_in_kafka_is_a_value_the_plant_served(stream_settings) -> None:
    settings = stream_settings()
    served: dict[tuple[str, str, int], float | None] = {}  # (machine, signal, source_ts) -> value
    held: dict[tuple[str, str], set[float]] = defaultdict(set)  # (machine, signal) -> values served
    meters: dict[str, set[float]] = defaultdict(set)  # machine -> energy meter readings served
    parts_made: dict[str, Counter[str]] = defaultdict(Counter)  # machine -> results of the parts made
    first_step = [True]  # served before the gateway's first read: its parts are the baseline, not the run's

    def record(snapshot: Snapshot) -> None:
        for reading in snapshot.readings:
            meters[reading.machine.machine_id].add(reading.status.energy_kwh)
            for signal, value in reading.values.items():
                served[(reading.machine.machine_id, signal, reading.source_ts)] = value
                if value is not None:
                    held[(reading.machine.machine_id, signal)].add(value)
        if not first_step[0]:
            for part in snapshot.parts:
                parts_made[part.machine_id][part.result.value] += 1
        first_step[0] = False

    run = run_live_plant(settings, seconds=30.0, on_snapshot=record)
    assert run.produced.gaps_missing == {"telemetry": 0, "events": 0, "quality": 0, "energy": 0}
    events = read_topic(settings, topic_name(settings, TELEMETRY)).events
    assert len(events) == run.produced.events["telemetry"]

    energy = read_topic(settings, topic_name(settings, ENERGY_USAGE), payload=EnergyUsage).events
    assert len(energy) == run.produced.events["energy"] and energy
    for reading in energy:
        assert reading.energy_kwh in meters[reading.machine_id] or any(
            math.isclose(reading.energy_kwh, m, abs_tol=0.01)
            for m in meters[reading.machine_id]  # Modbus: 0.01 kWh
        ), reading
    parts = read_topic(settings, topic_name(settings, QUALITY_METRICS), payload=QualityMetric).events
    assert len(parts) == run.produced.events["quality"] == run.produced.ground_truth_parts
    got: dict[str, Counter[str]] = defaultdict(Counter)
    for part in parts:
        got[part.machine_id][part.result.value] += 1
    assert got == parts_made, "every part the plant made, once, with its result"
    states = read_topic(settings, topic_name(settings, MACHINE_EVENTS), payload=MachineEvent).events
    initial = {e.machine_id for e in states if e.attributes.get("initial") == "true"}
    assert len(initial) == 12  # each machine's history starts with its state

    plant = load_plant()
    machines = {m.machine_id: m for m in plant.machines()}
    checked: dict[str, int] = defaultdict(int)
    for event in events:
        if event.quality == Quality.STALE:  # the plant stopped before the gateway: marked, valueless
            assert event.value is None
            continue
        machine = machines[event.machine_id]
        assert event.quality == Quality.GOOD and event.value is not None, event
        assert event.unit == SIGNALS[event.signal].unit, event  # the one signal catalogue
        if machine.protocol in ("opcua", "mqtt"):
            assert event.source_ts is not None, event
            expected = served[(event.machine_id, event.signal, event.source_ts)]
            assert expected is not None and math.isclose(event.value, expected, rel_tol=1e-12), event
        else:
            assert event.source_ts is None and event.read_ts is not None, event
            register = plant.type_config(machine.machine_type).registers[event.signal]
            on_the_wire = {decode(encode(v, register), register) for v in held[(event.machine_id, event.signal)]}
            assert any(math.isclose(event.value, v, rel_tol=1e-6, abs_tol=1e-9) for v in on_the_wire), event
        checked[machine.protocol] += 1
    assert set(checked) == {"opcua", "mqtt", "modbus"} and min(checked.values()) > 0, dict(checked)
