"""MQTT -> gateway -> Kafka against a real mosquitto and the session's real Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edge_peers import GatewayThread, MosquittoBroker, MqttPublisher, read_topic, wait_for, with_private_topics

from plantstream.contract import Quality
from plantstream.edge.config import parse_config
from plantstream.edge.gaps import gap_report
from plantstream.settings import Settings


def _config(port: int, machines: list[str], interval_s: float = 60.0) -> dict:
    return {
        "site": "plant-t",
        "gateway_id": "gw-test",
        "machines": [
            {
                "machine_id": m,
                "area": "machining",
                "line": "line-1",
                "protocol": "mqtt",
                "endpoint": f"mqtt://127.0.0.1:{port}",
                "interval_s": interval_s,
            }
            for m in machines
        ],
    }


def test_mqtt_values_types_timestamps_and_quality_reach_kafka(
    platform_settings: Settings, mosquitto: MosquittoBroker, tmp_path: Path, unique_name: Callable[..., str]
) -> None:
    settings, topic = with_private_topics(
        platform_settings.model_copy(update={"state_dir": tmp_path / "state"}), unique_name("edge-mqtt")
    )
    config = parse_config(_config(mosquitto.port, ["press-001"]))
    gateway = GatewayThread(settings, config)
    pub = MqttPublisher(mosquitto.port, "machine-press-001")
    base = int(time.time() * 1000) - 5_000
    mqtt_topic = "plantstream/v1/plant-t/machining/line-1/press-001/telemetry"
    try:
        wait_for(lambda: gateway.gateway.connected["press-001"], 20, "gateway connected to mosquitto")
        pub.publish(mqtt_topic, base, {"pressure": 101.5, "vibration": 2.25})
        pub.publish(mqtt_topic, base + 1000, {"pressure": 102.0, "vibration": None}, quality="uncertain")
        pub.publish(mqtt_topic, base + 1000, {"pressure": 102.0})  # QoS 1 style re-delivery: same source time
        pub.publish(mqtt_topic, base + 2000, {"pressure": 99.0}, quality="bad")
        wait_for(lambda: gateway.metric("plantstream_edge_events_out_total", protocol="mqtt") >= 4, 30, "4 forwarded")
    finally:
        pub.close()
        gateway.stop()
    events = read_topic(settings, topic).events
    got = [(e.signal, e.value, e.source_ts, e.quality, e.seq) for e in sorted(events, key=lambda e: e.seq)]
    assert got == [
        ("pressure", 101.5, base, Quality.GOOD, 0),
        ("vibration", 2.25, base, Quality.GOOD, 1),
        ("pressure", 102.0, base + 1000, Quality.UNCERTAIN, 2),
        ("pressure", 99.0, base + 2000, Quality.BAD, 3),
    ]
    for e in events:
        assert isinstance(e.value, float)
        assert (e.site, e.area, e.line, e.machine_id) == ("plant-t", "machining", "line-1", "press-001")
        assert e.unit == {"pressure": "bar", "vibration": "mm/s"}[e.signal]
        assert e.read_ts >= e.source_ts and e.ingest_ts >= e.read_ts
    report = gap_report(settings, buffer_path=settings.state_dir / "edge" / "buffer.sqlite")
    assert report.missing == 0 and report.duplicates == 0
    assert report.machines["press-001"].produced == 4
