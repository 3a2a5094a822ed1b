"""The simulator's own values reach Kafka through every protocol, unchanged.

The shipped plant is served live over OPC UA, MQTT and Modbus and collected by the
gateway into a private topic; every step the plant served is recorded (``on_snapshot``).
Each event in Kafka must be a value the plant served: for OPC UA and MQTT the value of
that machine and signal at the event's source timestamp (the device's clock, exact); for
Modbus - no timestamps on the wire - a value the device held during the run, as its
register map encodes it (scale, word order, type).
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from edge_peers import read_topic

from plantstream.contract import Quality
from plantstream.contract.signals import SIGNALS
from plantstream.edge.collectors.modbus import decode, encode
from plantstream.live_plant import run_live_plant
from plantstream.simulator.engine import Snapshot
from plantstream.simulator.plant_config import load_plant

pytestmark = pytest.mark.integration


def test_every_event_in_kafka_is_a_value_the_plant_served(stream_settings) -> None:
    settings = stream_settings()
    served: dict[tuple[str, str, int], float | None] = {}  # (machine, signal, source_ts) -> value
    held: dict[tuple[str, str], set[float]] = defaultdict(set)  # (machine, signal) -> values served

    def record(snapshot: Snapshot) -> None:
        for reading in snapshot.readings:
            for signal, value in reading.values.items():
                served[(reading.machine.machine_id, signal, reading.source_ts)] = value
                if value is not None:
                    held[(reading.machine.machine_id, signal)].add(value)

    run = run_live_plant(settings, seconds=6.0, on_snapshot=record)
    assert run.gaps_missing == 0
    events = read_topic(settings, settings.stream.telemetry_topic).events
    assert len(events) == run.events

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
