"""The core guarantee: a real Kafka broker outage (stop and restart of the durable local broker)
loses nothing, duplicates nothing and keeps per-machine order, also with ``kill -9`` of the gateway.

Each test runs its own SeaweedFS + Tansu (S3 storage) so stopping the broker does not
disturb other tests.  The plant keeps producing throughout: two MQTT machines (QoS 1,
every 20 ms) and one Modbus device polled every 100 ms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from edge_peers import (
    GatewayProcess,
    ModbusDevice,
    MosquittoBroker,
    PlantPublisher,
    isolated_settings,
    read_topic,
    scrape,
    wait_for,
)

from plantstream.contract import Quality
from plantstream.contract.edge_wire import Register
from plantstream.contract.topics import TELEMETRY, topic_name
from plantstream.edge.gaps import gap_report
from plantstream.observability.ports import PORT_SPAN, metrics_port
from plantstream.services.isolated import pick_free_port_block
from plantstream.services.supervisor import LocalPlatform
from plantstream.settings import Settings

MQTT_MACHINES = ("robot-001", "robot-002")
TORQUE = Register(table="holding", address=0, type="float32")
SPEED = Register(table="holding", address=2, type="uint16", scale=0.1)


@pytest.fixture(scope="module")
def outage_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, LocalPlatform]]:
    """SeaweedFS + Tansu (S3 storage) private to this module: its broker is the one the tests stop."""
    settings = isolated_settings(tmp_path_factory.mktemp("outage") / "state")
    platform = LocalPlatform(settings, services=["seaweedfs", "tansu"], die_with_parent=True)
    platform.up()
    try:
        yield settings, platform
    finally:
        platform.down()


@pytest.fixture
def own_platform(
    outage_platform: tuple[Settings, LocalPlatform], tmp_path: Path, free_port: Callable[[], int], unique_name
) -> tuple[Settings, LocalPlatform]:
    """Per test: its own topic, gateway state dir and metrics port on the module's platform."""
    base, platform = outage_platform
    settings = base.model_copy(
        update={
            "state_dir": tmp_path / "gw-state",
            "kafka": base.kafka.model_copy(update={"topic_prefix": unique_name("edge-outage") + "."}),
            "metrics": base.metrics.model_copy(update={"enabled": True, "base_port": pick_free_port_block(PORT_SPAN)}),
            "edge": base.edge.model_copy(
                update={
                    "producer_stuck_s": 5.0,
                    "backoff_min_s": 0.2,
                    "backoff_max_s": 2.0,
                    "stale_multiple": 30.0,
                }
            ),
        }
    )
    return settings, platform


def _gateway_config(tmp_path: Path, mqtt_port: int, modbus_port: int) -> Path:
    machines = [
        {
            "machine_id": m,
            "area": "assembly",
            "line": "line-2",
            "protocol": "mqtt",
            "endpoint": f"mqtt://127.0.0.1:{mqtt_port}",
            "interval_s": 1.0,
        }
        for m in MQTT_MACHINES
    ]
    machines.append(
        {
            "machine_id": "conveyor-001",
            "area": "assembly",
            "line": "line-2",
            "protocol": "modbus",
            "endpoint": f"modbus://127.0.0.1:{modbus_port}",
            "interval_s": 0.1,
            "modbus": {"unit_id": 1, "registers": {"torque": TORQUE.model_dump(), "belt_speed": SPEED.model_dump()}},
        }
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"site": "plant-o", "gateway_id": "gw-outage", "machines": machines}))
    return path


def _run_outage(
    settings: Settings,
    platform: LocalPlatform,
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    free_port: Callable[[], int],
    *,
    outage_s: float,
    kill_gateway: bool,
) -> None:
    topic = topic_name(settings, TELEMETRY)
    port = metrics_port(settings, "gateway")
    device = ModbusDevice(free_port())
    device.start()
    device.set(1, TORQUE, 12.5)
    device.set(1, SPEED, 1.5)
    gateway = GatewayProcess(settings, _gateway_config(tmp_path, mosquitto.port, device.port), tmp_path / "gw.log")
    gateway.start()
    topics = {m: f"plantstream/v1/plant-o/assembly/line-2/{m}/telemetry" for m in MQTT_MACHINES}
    plant = None
    try:
        wait_for(lambda: scrape(port).get("plantstream_edge_kafka_up") == 1, 60, "gateway connected to Kafka")
        plant = PlantPublisher(mosquitto.port, topics)

        def out_total() -> float:
            m = scrape(port)
            return sum(v for k, v in m.items() if k.startswith("plantstream_edge_events_out_total"))

        wait_for(lambda: out_total() >= 100, 30, "events flowing to Kafka before the outage")
        platform.down(services=["tansu"])
        t_down = time.monotonic()
        if kill_gateway:
            wait_for(lambda: time.monotonic() - t_down > outage_s / 2, outage_s, "half the outage")
            gateway.kill9()
            gateway.start()
        # The outage lasts outage_s while the plant keeps producing into the gateway's buffer.
        wait_for(
            lambda: (
                time.monotonic() - t_down >= outage_s and scrape(port).get("plantstream_edge_buffer_events", 0) > 100
            ),
            outage_s + 60,
            f"a {outage_s} s outage with events buffered",
        )
        platform.up()
        plant.stop()

        device.stop()  # the whole plant stops producing, so "drained" is a state that lasts
        wait_for(
            lambda: scrape(port).get("plantstream_edge_buffer_events", -1) == 0,
            120,
            "everything collected during the outage delivered to Kafka",
            poll_s=0.2,
        )
        assert gateway.terminate() == 0
    finally:
        if plant is not None:
            plant.stop()
        if gateway.alive():
            gateway.kill9()
        device.close()

    log = (tmp_path / "gw.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    report = gap_report(settings, buffer_path=settings.state_dir / "edge" / "buffer.sqlite")
    assert report.missing == 0, report.as_dict()
    assert report.duplicates == 0, report.as_dict()
    # Order is kept: after the broker went away, a fresh producer reconciles before resending
    # (a retry through the old producer could be acknowledged without being stored).
    assert report.out_of_order == 0, report.as_dict()
    assert report.pending == 0
    by_machine = read_topic(settings, topic).by_machine()
    assert set(by_machine) == {*MQTT_MACHINES, "conveyor-001"}
    for machine, events in by_machine.items():
        seqs = [e.seq for e in events]
        assert seqs == list(range(len(seqs))), f"{machine}: not exactly 0..n-1 in order"
    for machine in MQTT_MACHINES:
        values = [e for e in by_machine[machine] if e.signal == "torque" and e.quality != Quality.STALE]
        # every message the plant published (during the outage too) arrived exactly once
        assert sorted(e.source_ts for e in values) == plant.sent[machine]
        assert all(e.value == e.source_ts % 500 for e in values)
    conveyor = [e for e in by_machine["conveyor-001"] if e.quality != Quality.STALE]  # stale once the plant stops
    assert {e.value for e in conveyor if e.signal == "torque"} == {12.5}
    assert {e.value for e in conveyor if e.signal == "belt_speed"} == {1.5}
    assert all(e.source_ts is None for e in conveyor)
    # a machine that went quiet after the plant stopped is marked stale, never repeated as fresh
    assert all(e.value is None for m in by_machine.values() for e in m if e.quality == Quality.STALE)


# In the slow tier: >= 60 s outages (and a 10 s one each) take ~4 min together.
@pytest.mark.slow
@pytest.mark.parametrize(
    "outage",
    [(10, False), (10, True), (65, False), (65, True)],
    ids=["10s", "10s-gateway-kill9", "65s", "65s-gateway-kill9"],
)
def test_kafka_outage_loses_nothing(own_platform, tmp_path, mosquitto, free_port, outage: tuple[int, bool]) -> None:
    settings, platform = own_platform
    outage_s, kill_gateway = outage
    _run_outage(settings, platform, tmp_path, mosquitto, free_port, outage_s=outage_s, kill_gateway=kill_gateway)
