"""The plant on the wire, read by real peers: asyncua client, paho subscriber on mosquitto, pymodbus client.

One plant is served for the module at 10x real time (a step every 100 ms) with a few
scheduled faults; every test waits on a condition with a timeout.  Values read from the
wire are matched against the engine's own snapshots (recorded by ``on_snapshot``), so a
wrong word order, scale, timestamp or status shows up as a mismatch, not as "some number".
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from asyncua import Client, ua
from pymodbus.client import ModbusTcpClient
from waiting import wait_for

from plantstream.contract.edge_wire import OPCUA_NAMESPACE
from plantstream.contract.machine_tags import OPCUA_TAGS, MachineTag, PackMLState
from plantstream.simulator.engine import Snapshot, utc_ms
from plantstream.simulator.ground_truth import read_ground_truth
from plantstream.simulator.plant_config import FaultConfig, PlantConfig, ScheduledFault
from plantstream.simulator.protocols.modbus_server import _TYPES
from plantstream.simulator.protocols.mosquitto import MosquittoBroker
from plantstream.simulator.serve import RunningPlant, serve_in_thread

SPEED = 10.0
START = utc_ms(2026, 1, 5, 8, 0)
FAULTS = [
    ScheduledFault(at_s=5, machine="cnc-mill-001", kind="stuck", signal="torque", duration_s=3600),
    ScheduledFault(at_s=5, machine="cnc-mill-005", kind="dropout", signal="vibration", duration_s=3600),
    ScheduledFault(at_s=5, machine="robot-cell-007", kind="clock_skew", duration_s=3600, skew_s=30),
    ScheduledFault(at_s=60, machine="press-006", kind="offline", duration_s=40),
]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class History:
    """Every snapshot the engine produced, by machine and source timestamp."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_machine: dict[str, dict[int, dict]] = {}
        self.status: dict[str, dict[int, dict]] = {}  # the controller's tags, by machine and source time
        self.parts: list = []
        self.ts: list[int] = []

    def __call__(self, snapshot: Snapshot) -> None:
        with self.lock:
            self.ts.append(snapshot.ts)
            self.parts += snapshot.parts
            for r in snapshot.readings:
                self.by_machine.setdefault(r.machine.machine_id, {})[r.source_ts] = dict(r.values)
                self.status.setdefault(r.machine.machine_id, {})[r.source_ts] = dict(r.status.tag_values())

    def values(self, machine_id: str) -> list[dict]:
        with self.lock:
            return list(self.by_machine.get(machine_id, {}).values())

    def statuses(self, machine_id: str) -> list[dict]:
        with self.lock:
            return list(self.status.get(machine_id, {}).values())


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlantConfig, RunningPlant, History, Path]]:
    from plantstream.simulator.plant_config import load_plant

    out = tmp_path_factory.mktemp("served")
    plant = load_plant().with_endpoint_ports({name: _port() for name in load_plant().endpoints})
    plant = plant.with_faults(FaultConfig(scheduled=FAULTS))
    history = History()
    with serve_in_thread(plant, out, speed=SPEED, start_ms=START, on_snapshot=history) as running:
        yield plant, running, history, out


async def _read_machine(url: str, path: tuple[str, ...]) -> dict[str, ua.DataValue]:
    async with Client(url, timeout=5) as client:
        idx = await client.get_namespace_index(OPCUA_NAMESPACE)
        machine = await client.nodes.objects.get_child([f"{idx}:{p}" for p in path])
        out = {}
        for child in await machine.get_children():
            if await child.read_node_class() != ua.NodeClass.Variable:
                continue  # the PackTags / EnergyMeter folders
            out[(await child.read_browse_name()).Name] = await child.read_data_value(raise_on_bad_status=False)
        return out


async def _read_tags(url: str, path: tuple[str, ...]) -> dict[MachineTag, ua.DataValue]:
    """The controller tags of a machine, read in ONE request as the gateway reads them."""
    async with Client(url, timeout=5) as client:
        idx = await client.get_namespace_index(OPCUA_NAMESPACE)
        machine = await client.nodes.objects.get_child([f"{idx}:{p}" for p in path])
        nodes = {tag: await machine.get_child([f"{idx}:{f}", f"{idx}:{n}"]) for tag, (f, n, _t) in OPCUA_TAGS.items()}
        values = await client.read_attributes(list(nodes.values()))
        return dict(zip(nodes, values, strict=True))


def test_opcua_nodes_carry_values_source_timestamps_and_status(served) -> None:
    plant, _running, history, _out = served
    url = plant.endpoints["opcua-machining"].url()
    path = ("Plant", "plant-1", "machining", "line-2", "cnc-mill-005")
    wait_for(lambda: len(history.ts) > 8, 20, "the dropout to start")
    values = asyncio.run(_read_machine(url, path))
    assert set(values) == set(plant.machines()[4].signals)
    torque = values["torque"]
    ts = int(torque.SourceTimestamp.timestamp() * 1000)
    assert START < ts <= max(history.ts)
    served_values = history.by_machine["cnc-mill-005"][ts]
    assert torque.StatusCode.is_good() and torque.Value.Value == served_values["torque"]
    assert torque.Value.VariantType is ua.VariantType.Double
    dropped = values["vibration"]
    assert dropped.StatusCode.is_bad() and dropped.Value.Value is None, "a dropped-out sensor is Bad with no value"


def test_opcua_packtags_show_the_controllers_state_counters_and_meter(served) -> None:
    plant, _running, history, _out = served
    url = plant.endpoints["opcua-machining"].url()
    path = ("Plant", "plant-1", "machining", "line-2", "cnc-mill-005")
    wait_for(lambda: len(history.ts) > 3, 20, "a few steps")
    tags = asyncio.run(_read_tags(url, path))
    ts = {int(dv.SourceTimestamp.timestamp() * 1000) for dv in tags.values()}
    assert len(ts) == 1, "one step's tags, all from one moment"
    served_status = history.status["cnc-mill-005"][ts.pop()]
    assert {tag: dv.Value.Value for tag, dv in tags.items()} == served_status
    assert tags[MachineTag.PARTS_PROCESSED].Value.VariantType is ua.VariantType.Int32  # PackML AccCount
    assert tags[MachineTag.STATE].Value.Value in {int(s) for s in PackMLState}


def test_opcua_stuck_sensor_repeats_its_value_while_time_moves_on(served) -> None:
    plant, _running, history, _out = served
    url = plant.endpoints["opcua-machining"].url()
    path = ("Plant", "plant-1", "machining", "line-1", "cnc-mill-001")
    wait_for(lambda: len(history.ts) > 10, 20, "the stuck fault to start")
    first = asyncio.run(_read_machine(url, path))
    wait_for(lambda: max(history.ts) > first["torque"].SourceTimestamp.timestamp() * 1000 + 3000, 10, "time to move")
    second = asyncio.run(_read_machine(url, path))
    assert second["torque"].SourceTimestamp > first["torque"].SourceTimestamp
    assert second["torque"].Value.Value == first["torque"].Value.Value, "stuck"
    assert second["air_temperature"].Value.Value != first["air_temperature"].Value.Value, "the rest moves"


def test_mqtt_payloads_reach_a_subscriber_with_skewed_clock_where_injected(served) -> None:
    plant, _running, history, _out = served
    ep = plant.endpoints["mqtt-broker"]
    got: dict[str, list[dict]] = {}
    lock = threading.Lock()

    def on_message(_client, _userdata, msg) -> None:
        with lock:
            got.setdefault(msg.topic, []).append(json.loads(msg.payload))

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sim-test-sub")
    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe("plantstream/v1/+/+/+/+/telemetry", qos=1)
    client.connect(ep.host, ep.port)
    client.loop_start()
    try:
        topic7 = "plantstream/v1/plant-1/machining/line-2/robot-cell-007/telemetry"
        topic3 = "plantstream/v1/plant-1/machining/line-1/robot-cell-003/telemetry"
        wait_for(lambda: len(got.get(topic7, [])) >= 5 and len(got.get(topic3, [])) >= 5, 20, "MQTT messages")
    finally:
        client.loop_stop()
        client.disconnect()
    assert set(got) == {topic3, topic7, "plantstream/v1/plant-1/assembly/line-3/robot-cell-011/telemetry"}
    message = got[topic3][-1]
    assert set(message) == {"ts", "values", "quality"} and message["quality"] == "good"
    assert history.by_machine["robot-cell-003"][message["ts"]] == message["values"]
    assert set(message["values"]) == set(plant.machines()[2].signals)
    skewed = got[topic7][-1]
    true_ts = skewed["ts"] - 30_000  # the device clock runs 30 s ahead
    assert true_ts in history.ts and skewed["ts"] not in history.ts


def test_mqtt_state_and_part_results_are_published_beside_the_telemetry(served) -> None:
    plant, _running, history, _out = served
    ep = plant.endpoints["mqtt-broker"]
    got: dict[str, list[dict]] = {"state": [], "quality": []}
    lock = threading.Lock()

    def on_message(_client, _userdata, msg) -> None:
        with lock:
            got[msg.topic.rsplit("/", 1)[1]].append({"topic": msg.topic, **json.loads(msg.payload)})

    def subscribe(c, *_a) -> None:
        c.subscribe([("plantstream/v1/+/+/+/+/state", 1), ("plantstream/v1/+/+/+/+/quality", 1)])

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sim-test-state")
    client.on_message = on_message
    client.on_connect = subscribe
    client.connect(ep.host, ep.port)
    client.loop_start()
    try:
        wait_for(lambda: len(got["quality"]) >= 2 and len(got["state"]) >= 10, 60, "states and part results")
    finally:
        client.loop_stop()
        client.disconnect()
    state = got["state"][-1]
    machine = state["topic"].split("/")[-2]
    assert {k: v for k, v in state.items() if k not in ("topic", "ts")} == history.status[machine][state["ts"]]
    with history.lock:
        made = {p.part_id: p for p in history.parts}
    for part in got["quality"]:
        served_part = made[part["part_id"]]
        assert part["result"] == served_part.result.value and part["defect_code"] == served_part.defect_code
        assert part["measurements"] == served_part.measurements and part["ts"] == served_part.source_ts


def _decode(words: list[int], reg) -> float:
    value = ModbusTcpClient.convert_from_registers(words, _TYPES[reg.type], word_order=reg.word_order)
    return float(value) if reg.type == "float32" else float(value) * reg.scale


def test_modbus_registers_decode_to_the_served_values(served) -> None:
    plant, _running, history, _out = served
    ep = plant.endpoints["modbus-line-1"]
    regs = plant.machine_types["press"].registers  # type: ignore[index]
    client = ModbusTcpClient(ep.host, port=ep.port, timeout=2)
    assert client.connect()
    try:
        holding = client.read_holding_registers(0, count=21, device_id=1)
        inputs = client.read_input_registers(0, count=2, device_id=1)
        conveyor = client.read_holding_registers(0, count=6, device_id=2)
    finally:
        client.close()
    assert not holding.isError() and not inputs.isError() and not conveyor.isError()
    tables = {"holding": holding.registers, "input": inputs.registers}
    decoded = {s: _decode(tables[r.table][r.address : r.address + r.words], r) for s, r in regs.items()}

    # One of the recorded steps must match every register at once (types, scaling, word order).
    def matches(values: dict) -> bool:
        for signal, reg in regs.items():
            want = values[signal]
            tolerance = 1e-3 * max(abs(want), 1) if reg.type == "float32" else reg.scale / 2 + 1e-9
            if abs(decoded[signal] - want) > tolerance:
                return False
        return True

    steps = [{**v, **s} for v, s in zip(history.values("press-002"), history.statuses("press-002"), strict=True)]
    assert any(matches(v) for v in steps), decoded
    assert 290 < decoded["air_temperature"] < 320 and decoded["cycle_count"] >= 10_000


def test_an_offline_modbus_device_refuses_connections_then_answers_again(served) -> None:
    plant, _running, history, out = served
    ep = plant.endpoints["modbus-line-2"]

    def answers() -> bool:
        client = ModbusTcpClient(ep.host, port=ep.port, timeout=0.5, retries=0)
        try:
            if not client.connect():
                return False
            return not client.read_holding_registers(0, count=1, device_id=1).isError()
        except Exception:
            return False
        finally:
            client.close()

    wait_for(lambda: not answers(), 20, "the device to go offline")
    truth = read_ground_truth(out / "ground_truth.jsonl")
    offline = {t.machine_id for t in truth if t.kind == "device_fault" and t.endpoint == "modbus-line-2"}
    assert offline == {"press-006", "conveyor-008"}
    wait_for(answers, 20, "the device to come back")
    assert max(history.ts) >= START + 99_000, "back only after the 40 s outage that began at 60 s"


def test_managed_broker_helper_restarts_keeping_persistent_sessions(mosquitto_broker: MosquittoBroker) -> None:
    """QoS-1 messages published while a persistent subscriber is away survive a broker restart."""
    received: list[bytes] = []
    subscribed = threading.Event()

    def subscriber() -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="persistent-sub", clean_session=False, protocol=mqtt.MQTTv311
        )
        client.on_message = lambda _c, _u, msg: received.append(msg.payload)
        client.on_subscribe = lambda *_a: subscribed.set()
        client.connect(mosquitto_broker.host, mosquitto_broker.port)
        return client

    sub = subscriber()
    sub.subscribe("t/x", qos=1)
    sub.loop_start()
    wait_for(subscribed.is_set, 5, "the subscription acknowledged")
    sub.loop_stop()
    sub.disconnect()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pub")
    pub.connect(mosquitto_broker.host, mosquitto_broker.port)
    pub.loop_start()
    pub.publish("t/x", b"while-away", qos=1).wait_for_publish(5)
    pub.loop_stop()
    pub.disconnect()
    mosquitto_broker.restart()
    sub = subscriber()
    sub.loop_start()
    try:
        wait_for(lambda: received, 10, "the queued message after the restart")
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert received == [b"while-away"]
