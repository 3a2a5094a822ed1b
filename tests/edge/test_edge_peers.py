"""Self-healing and honest values against real OPC UA and Modbus servers (and mosquitto).

The OPC UA server and the Modbus device are down when the gateway starts, then up,
then down (a short while here, two minutes in the slow tier), then restarted: data
resumes each time without a gateway restart, the machines are stale while down (and
nothing is repeated as fresh), and the MQTT machine's data is unaffected throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from edge_peers import GatewayThread, ModbusDevice, MosquittoBroker, MqttPublisher, OpcUaPlant, read_topic, wait_for

from plantstream.contract import Quality
from plantstream.contract.edge_wire import Register
from plantstream.contract.topics import TELEMETRY, topic_name
from plantstream.edge.buffer import EdgeStore
from plantstream.edge.config import parse_config
from plantstream.edge.gaps import gap_report
from plantstream.settings import Settings

SITE = "plant-p"
TORQUE = Register(table="holding", address=10, type="float32", word_order="little")
COUNT = Register(table="input", address=0, type="int32", scale=1.0)
TEMP = Register(table="holding", address=12, type="int16", scale=0.1)


def _settings(platform_settings: Settings, tmp_path: Path, topic: str) -> Settings:
    return platform_settings.model_copy(
        update={
            "state_dir": tmp_path / "gw",
            "kafka": platform_settings.kafka.model_copy(update={"topic_prefix": f"{topic}."}),
            "edge": platform_settings.edge.model_copy(
                update={"stale_multiple": 3.0, "backoff_min_s": 0.1, "backoff_max_s": 1.0}
            ),
        }
    )


def _run_peer_recovery(
    *,
    platform_settings: Settings,
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    free_port: Callable[[], int],
    topic: str,
    down_s: float,
) -> None:
    settings = _settings(platform_settings, tmp_path, topic)
    opc = OpcUaPlant(free_port(), SITE, {"mill-001": ("machining", "line-1", ["torque", "vibration"])})
    device = ModbusDevice(free_port(), units=(3,))
    config = parse_config(
        {
            "site": SITE,
            "gateway_id": "gw-peers",
            "machines": [
                {
                    "machine_id": "mill-001",
                    "area": "machining",
                    "line": "line-1",
                    "protocol": "opcua",
                    "endpoint": opc.endpoint,
                    "interval_s": 0.3,
                    "opcua": {"browse_interval_s": 0.5, "publishing_interval_ms": 50},
                },
                {
                    "machine_id": "press-009",
                    "area": "machining",
                    "line": "line-1",
                    "protocol": "modbus",
                    "endpoint": f"modbus://127.0.0.1:{device.port}",
                    "interval_s": 0.2,
                    "modbus": {
                        "unit_id": 3,
                        "registers": {
                            "torque": TORQUE.model_dump(),
                            "cycle_count": COUNT.model_dump(),
                            "air_temperature": TEMP.model_dump(),
                        },
                    },
                },
                {
                    "machine_id": "belt-001",
                    "area": "machining",
                    "line": "line-1",
                    "protocol": "mqtt",
                    "endpoint": f"mqtt://127.0.0.1:{mosquitto.port}",
                    "interval_s": 0.2,
                },
            ],
        }
    )
    gw = GatewayThread(settings, config)
    g = gw.gateway
    pub = MqttPublisher(mosquitto.port, "belt-001")
    belt_topic = f"plantstream/v1/{SITE}/machining/line-1/belt-001/telemetry"
    sent_belt: list[int] = []
    windows: list[tuple[int, int]] = []  # (down from, up at) in epoch ms

    def publish_belt() -> bool:
        ts = int(time.time() * 1000)
        pub.publish(belt_topic, ts, {"belt_speed": 1.25})
        sent_belt.append(ts)
        return False

    def wait_publishing(cond: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait for ``cond`` while the MQTT machine keeps publishing every ~0.1 s (it must stay fresh)."""
        wait_for(lambda: publish_belt() or cond(), timeout, what, poll_s=0.1)
        assert "belt-001" not in g.staleness.stale

    written_ts: list[int] = []

    def ts() -> int:
        """A source time after every earlier one (the server's own initial values included)."""
        time.sleep(0.002)
        written_ts.append(int(time.time() * 1000))
        return written_ts[-1]

    try:
        wait_for(lambda: g.connected["belt-001"], 20, "gateway subscribed at mosquitto")
        # 1. both peers are down at gateway start: stale, and no data
        wait_publishing(lambda: {"mill-001", "press-009"} <= g.staleness.stale, 20, "down peers marked stale")
        windows.append((0, int(time.time() * 1000)))
        # 2. they come up: data flows without a gateway restart
        device.set(3, TORQUE, 42.5)
        device.set(3, COUNT, -7)
        device.set(3, TEMP, 301.5)
        windows[-1] = (0, int(time.time() * 1000))
        device.start()
        opc.start()
        wait_publishing(lambda: g.connected["mill-001"] and g.connected["press-009"], 30, "peers connected")
        opc.write("mill-001", "torque", 12.0, ts(), "Good")
        opc.write("mill-001", "vibration", 3.5, ts(), "Uncertain")
        opc.write("mill-001", "torque", 13.0, ts(), "Bad")
        wait_publishing(lambda: gw.metric("plantstream_edge_events_in_total", protocol="opcua") >= 3, 20, "opcua data")
        # tags added on the server are picked up by the periodic browse
        opc.add_signal("mill-001", "power")
        wait_publishing(lambda: "power" in g.signals.get("mill-001", []), 20, "new tag browsed")
        wait_publishing(lambda: ("mill-001", "power") in g.store.sequencer.watermarks, 20, "new tag's initial value")
        opc.write("mill-001", "power", 7.75, ts(), "Good")
        wait_publishing(
            lambda: g.store.sequencer.watermarks.get(("mill-001", "power")) == written_ts[-1], 20, "new tag data"
        )
        wait_publishing(lambda: not ({"mill-001", "press-009"} & g.staleness.stale), 20, "peers fresh")
        # 3. they go away for down_s
        opc.stop()
        device.stop()
        t_down = int(time.time() * 1000)
        wait_publishing(lambda: {"mill-001", "press-009"} <= g.staleness.stale, 30, "peers stale while down")
        wait_publishing(lambda: time.time() * 1000 - t_down >= down_s * 1000, down_s + 10, f"{down_s} s down")
        # 4. restarted: data resumes, the old OPC UA values are not re-emitted as new
        device.set(3, TORQUE, 43.0)
        t_up = int(time.time() * 1000)
        windows.append((t_down, t_up))
        device.start()
        opc.start()  # a fresh server: its nodes start with no source timestamp history
        wait_publishing(lambda: g.connected["mill-001"] and g.connected["press-009"], 60, "peers reconnected")
        opc.write("mill-001", "torque", 14.0, ts(), "Good")
        wait_publishing(
            lambda: g.store.sequencer.watermarks.get(("mill-001", "torque")) == written_ts[-1], 20, "data after restart"
        )
        wait_publishing(lambda: not ({"mill-001", "press-009"} & g.staleness.stale), 30, "peers fresh again")

        def belt_done() -> bool:
            """The last message is committed (the durable numbering caught up) and no longer buffered."""
            if g.store.sequencer.watermarks.get(("belt-001", "belt_speed")) != sent_belt[-1]:
                return False
            view = EdgeStore.open_readonly(g.store.path)
            try:
                key = ("belt-001", "telemetry")
                committed = view.produced().get(key)
                return committed == g.store.sequencer.next_seq[key] and not view.pending_seqs().get(key)
            finally:
                view.close()

        wait_for(belt_done, 30, "the MQTT machine's last message delivered to Kafka")
        assert gw.metric("plantstream_edge_reconnects_total", protocol="opcua") >= 1
        assert gw.metric("plantstream_edge_reconnects_total", protocol="modbus") >= 1
    finally:
        pub.close()
        gw.stop()
        opc.close()
        device.close()

    by_machine = read_topic(settings, topic_name(settings, TELEMETRY)).by_machine()
    mill = by_machine["mill-001"]
    press = by_machine["press-009"]
    fresh_mill = [(e.signal, e.value, e.source_ts, e.quality) for e in mill if e.quality != Quality.STALE]
    # the values written, each once, with their source time and quality (besides them, the server's
    # initial node values arrive once per server start, with the server's own source time)
    written = [x for x in fresh_mill if x[2] in written_ts]
    b = written_ts
    # a Bad value is passed on as the server gives it (asyncua's server sends none with Bad)
    written = [(n, None if q == Quality.BAD else v, t, q) for n, v, t, q in written]
    assert sorted(written, key=lambda x: x[2]) == [
        ("torque", 12.0, b[0], Quality.GOOD),
        ("vibration", 3.5, b[1], Quality.UNCERTAIN),
        ("torque", None, b[2], Quality.BAD),
        ("power", 7.75, b[3], Quality.GOOD),
        ("torque", 14.0, b[4], Quality.GOOD),
    ]
    assert len({(e.signal, e.source_ts) for e in mill if e.source_ts}) == len([e for e in mill if e.source_ts])
    press_fresh = [e for e in press if e.quality != Quality.STALE]
    assert {e.value for e in press_fresh if e.signal == "cycle_count"} == {-7.0}
    assert {round(e.value or 0, 6) for e in press_fresh if e.signal == "air_temperature"} == {301.5}
    assert {e.value for e in press_fresh if e.signal == "torque"} == {42.5, 43.0}
    assert all(e.source_ts is None and e.quality == Quality.GOOD for e in press_fresh)
    # while a peer was down nothing fresh was emitted for it, and it was explicitly marked stale
    for start, end in windows:
        for events in (mill, press):
            assert not [e for e in events if e.quality != Quality.STALE and start + 500 < e.read_ts < end]
    press_stale = [e for e in press if e.quality == Quality.STALE]
    assert {e.signal for e in press_stale} == {"torque", "cycle_count", "air_temperature"}
    assert all(e.value is None for e in press_stale)
    assert any(e.quality == Quality.STALE for e in mill)  # it had signals when it went down the 2nd time
    # the MQTT machine was unaffected: everything it published arrived, once, in order
    belt = [e.source_ts for e in by_machine["belt-001"] if e.quality != Quality.STALE]
    # (two publishes in the same millisecond carry the same source time: the second is a repeat, taken once)
    assert belt == sorted(set(sent_belt))
    report = gap_report(settings, buffer_path=settings.state_dir / "edge" / "buffer.sqlite")
    assert report.missing == 0 and report.duplicates == 0 and report.out_of_order == 0, report.as_dict()


@pytest.mark.parametrize(
    "down_s", [4, pytest.param(120, marks=pytest.mark.slow, id="two-minutes")], ids=lambda s: f"{s}s"
)
def test_peers_down_at_start_then_up_down_and_restarted(
    platform_settings: Settings, tmp_path: Path, mosquitto: MosquittoBroker, free_port, unique_name, down_s: int
) -> None:
    _run_peer_recovery(
        platform_settings=platform_settings,
        tmp_path=tmp_path,
        mosquitto=mosquitto,
        free_port=free_port,
        topic=unique_name("edge-peers"),
        down_s=down_s,
    )
