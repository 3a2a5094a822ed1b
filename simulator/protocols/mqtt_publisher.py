"""The plant's MQTT face: publishes each machine's readings to a broker (paho-mqtt).

Topic ``plantstream/v1/<site>/<area>/<line>/<machine_id>/telemetry``, JSON payload
``{"ts": <source epoch ms>, "values": {"<signal>": <number or null>}, "quality": "good"}``,
QoS 1 (docs/edge-protocols.md).  A dropped-out sensor is ``null`` ("not measured" in the
contract); the message quality is ``good`` unless every value is bad, because one
missing value says nothing about the others.  A machine whose device is offline simply
stops publishing, as a real one would.
"""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt

from plantstream.contract import Quality
from plantstream.contract.edge_wire import MQTT_TOPIC
from plantstream.simulator.engine import Reading
from plantstream.simulator.plant import Machine
from plantstream.simulator.plant_config import Endpoint


def topic_of(machine: Machine) -> str:
    return MQTT_TOPIC.format(site=machine.site, area=machine.area, line=machine.line, machine_id=machine.machine_id)


def payload_of(reading: Reading) -> bytes:
    qualities = set(reading.quality.values())
    quality = (
        Quality.BAD
        if qualities == {Quality.BAD}
        else (Quality.UNCERTAIN if Quality.UNCERTAIN in qualities else Quality.GOOD)
    )
    return json.dumps(
        {"ts": reading.source_ts, "values": reading.values, "quality": quality.value}, separators=(",", ":")
    ).encode()


class MqttPublisher:
    """One paho client publishing the machines of one ``mqtt`` endpoint (a broker)."""

    def __init__(self, name: str, endpoint: Endpoint, machines: list[Machine], client_id: str) -> None:
        self.name, self.endpoint, self.machines = name, endpoint, machines
        self._connected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=True
        )
        self.client.max_queued_messages_set(100_000)
        self.client.on_connect = lambda *_args: self._connected.set()
        self.client.on_disconnect = lambda *_args: self._connected.clear()
        self.published = 0

    @property
    def online(self) -> bool:
        return self._connected.is_set()

    def start(self, timeout: float = 10.0) -> None:
        """Connect (paho reconnects by itself if the broker restarts later)."""
        self.client.reconnect_delay_set(0.2, 2.0)
        self.client.connect_async(self.endpoint.host, self.endpoint.port, keepalive=10)
        self.client.loop_start()
        if not self._connected.wait(timeout):
            raise TimeoutError(
                f"MQTT broker {self.endpoint.host}:{self.endpoint.port} did not accept us in {timeout} s"
            )

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def update(self, readings: list[Reading]) -> None:
        for reading in readings:
            if reading.online:
                self.client.publish(topic_of(reading.machine), payload_of(reading), qos=1)
                self.published += 1
