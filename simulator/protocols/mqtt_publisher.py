"""The plant's MQTT face: publishes each machine's readings, state and parts to a broker.

Per machine, QoS 1 (docs/edge-protocols.md):

* ``plantstream/v1/<site>/<area>/<line>/<machine_id>/telemetry`` every step:
  ``{"ts": <source epoch ms>, "values": {"<signal>": <number or null>}, "quality": "good"}``.
  A dropped-out sensor is ``null`` ("not measured" in the contract); the message quality
  is ``good`` unless every value is bad, because one missing value says nothing about the
  others;
* ``…/state`` every step: the controller's tags (``contract.machine_tags``: PackML state
  and mode, stop reason id and text, part counters, energy meter) as one JSON object,
  so a reader always gets a consistent set;
* ``…/quality`` once per part: the inspection result ``{"ts", "part_id", "result",
  "defect_code", "product_variant", "measurements"}``.

A machine whose device is offline simply stops publishing, as a real one would.
"""

from __future__ import annotations

import json
import threading

import paho.mqtt.client as mqtt

from plantstream.contract import Quality, QualityMetric
from plantstream.contract.edge_wire import mqtt_topic
from plantstream.simulator.engine import Reading
from plantstream.simulator.plant import Machine
from plantstream.simulator.plant_config import Endpoint


def topic_of(machine: Machine, channel: str = "telemetry") -> str:
    return mqtt_topic(machine.site, machine.area, machine.line, machine.machine_id, channel)


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


def state_payload_of(reading: Reading) -> bytes:
    return json.dumps({"ts": reading.source_ts, **reading.status.tag_values()}, separators=(",", ":")).encode()


def part_payload_of(part: QualityMetric) -> bytes:
    return json.dumps(
        {
            "ts": part.source_ts,
            "part_id": part.part_id,
            "result": part.result.value,
            "defect_code": part.defect_code,
            "product_variant": part.product_variant,
            "measurements": part.measurements,
        },
        separators=(",", ":"),
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

    def update(self, readings: list[Reading], parts: list[QualityMetric] = ()) -> None:
        """Publish a step: every online machine's new parts, then its readings and state.

        Parts first: a reader that has seen a machine's state of a step has seen its parts
        of that step too (one connection delivers in publish order).
        """
        online = {r.machine.machine_id: r.machine for r in readings if r.online}
        for part in parts:
            machine = online.get(part.machine_id)
            if machine is not None:  # an offline device reports nothing, not even its parts
                self.client.publish(topic_of(machine, "quality"), part_payload_of(part), qos=1)
                self.published += 1
        for reading in readings:
            if reading.online:
                self.client.publish(topic_of(reading.machine), payload_of(reading), qos=1)
                self.client.publish(topic_of(reading.machine, "state"), state_payload_of(reading), qos=1)
                self.published += 2
