"""Real peers for gateway tests: mosquitto, a pymodbus TCP server, an asyncua server, and the gateway itself.

Each server runs for real (its own process or its own event loop thread) on a free
loopback port and can be stopped and started again on the same port, which is how
the tests take a peer away and bring it back.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from waiting import wait_for

from plantstream.connect.kafka import consumer
from plantstream.contract import Codec, Telemetry
from plantstream.contract.edge_wire import Register
from plantstream.contract.topics import TELEMETRY, topic_name
from plantstream.edge.gateway import GatewayInThread as GatewayThread
from plantstream.services.isolated import isolated_settings
from plantstream.settings import Settings, child_env
from plantstream.simulator.protocols.mosquitto import MosquittoBroker

__all__ = ["GatewayThread", "MosquittoBroker", "isolated_settings", "wait_for"]  # re-exported for the test modules


def with_private_topics(settings: Settings, name: str) -> tuple[Settings, str]:
    """``settings`` with every topic under the prefix ``name.``, and the telemetry topic's name."""
    private = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"topic_prefix": f"{name}."})})
    return private, topic_name(private, TELEMETRY)


T = TypeVar("T")


class LoopThread:
    """An asyncio loop in a daemon thread; ``call(coro)`` runs a coroutine on it and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- mosquitto -------------------------------------------------------------------------


class MqttPublisher:
    """A machine publishing telemetry at QoS 1 (its own paho client and network thread)."""

    def __init__(self, port: int, client_id: str) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, ts: int, values: dict[str, float | None], quality: str | None = None) -> None:
        body: dict[str, Any] = {"ts": ts, "values": values}
        if quality is not None:
            body["quality"] = quality
        info = self.client.publish(topic, json.dumps(body), qos=1)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- Modbus ----------------------------------------------------------------------------


class ModbusDevice:
    """A pymodbus TCP server; ``set(unit, register, value)`` writes an engineering value (kept across restarts)."""

    def __init__(self, port: int, units: tuple[int, ...] = (1,)) -> None:
        self.port = port
        self.units = units
        self.values: dict[tuple[int, int, int], list[int]] = {}
        self.loop = LoopThread(f"modbus-{port}")
        self.server: Any = None
        self._serving: Any = None

    def _devices(self) -> list[Any]:
        from pymodbus.simulator import DataType, SimData, SimDevice

        def regs() -> list[Any]:
            return [SimData(0, values=[0] * 200, datatype=DataType.REGISTERS)]

        def bits() -> list[Any]:
            return [SimData(0, count=16, values=False, datatype=DataType.BITS)]

        return [SimDevice(id=u, simdata=(bits(), bits(), regs(), regs())) for u in self.units]

    def start(self) -> None:
        from pymodbus.server import ModbusTcpServer

        async def go() -> None:
            self.server = ModbusTcpServer(self._devices(), address=("127.0.0.1", self.port))
            for (unit, code, address), words in self.values.items():
                await self.server.context.async_setValues(unit, code, address, words)
            self._serving = asyncio.ensure_future(self.server.serve_forever())
            for _ in range(200):
                if self.server.is_active():
                    return
                await asyncio.sleep(0.02)
            raise RuntimeError("modbus server did not start")

        self.loop.call(go())

    def stop(self) -> None:
        if self.server is not None:
            self.loop.call(self.server.shutdown())
            self.server = None

    def set(self, unit: int, reg: Register, value: float) -> None:
        from plantstream.edge.collectors.modbus import encode

        code = 3 if reg.table == "holding" else 4
        words = encode(value, reg)
        self.values[(unit, code, reg.address)] = words
        if self.server is not None:
            self.loop.call(self.server.context.async_setValues(unit, code, reg.address, words))

    def close(self) -> None:
        self.stop()
        self.loop.close()


# -- OPC UA ----------------------------------------------------------------------------

NS_URI = "urn:plantstream:plant"


class OpcUaPlant:
    """An asyncua server serving ``Objects/Plant/<site>/<area>/<line>/<machine>/<signal>`` Doubles."""

    def __init__(self, port: int, site: str, machines: dict[str, tuple[str, str, list[str]]]) -> None:
        self.port = port
        self.site = site
        self.machines = machines  # machine -> (area, line, signals)
        self.endpoint = f"opc.tcp://127.0.0.1:{port}/plantstream/"
        self.loop = LoopThread(f"opcua-{port}")
        self.server: Any = None
        self.nodes: dict[tuple[str, str], Any] = {}
        self.folders: dict[str, Any] = {}
        self.ns = 0

    def start(self) -> None:
        self.loop.call(self._start(), timeout=60)

    async def _start(self) -> None:
        from asyncua import Server, ua

        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.ns = await server.register_namespace(NS_URI)
        plant = await server.nodes.objects.add_folder(self.ns, "Plant")
        site = await plant.add_folder(self.ns, self.site)
        self.nodes.clear()
        for machine, (area, line, signals) in self.machines.items():
            area_node = await _child_folder(site, self.ns, area)
            line_node = await _child_folder(area_node, self.ns, line)
            folder = await line_node.add_folder(self.ns, machine)
            self.folders[machine] = folder
            for signal_name in signals:
                self.nodes[(machine, signal_name)] = await folder.add_variable(self.ns, signal_name, 0.0)
        await server.start()
        self.server = server

    def add_signal(self, machine: str, signal_name: str) -> None:
        async def go() -> None:
            self.nodes[(machine, signal_name)] = await self.folders[machine].add_variable(self.ns, signal_name, 0.0)

        self.loop.call(go())

    def remove_signal(self, machine: str, signal_name: str) -> None:
        async def go() -> None:
            node = self.nodes.pop((machine, signal_name))
            await self.server.delete_nodes([node])

        self.loop.call(go())

    def write(self, machine: str, signal_name: str, value: float, source_ts_ms: int, status: str = "Good") -> None:
        from asyncua import ua

        async def go() -> None:
            dv = ua.DataValue(
                ua.Variant(value, ua.VariantType.Double),
                StatusCode=ua.StatusCode(getattr(ua.StatusCodes, status)),
                SourceTimestamp=datetime.fromtimestamp(source_ts_ms / 1000, UTC),
            )
            await self.nodes[(machine, signal_name)].write_value(dv)

        self.loop.call(go())

    def stop(self) -> None:
        if self.server is not None:
            self.loop.call(self.server.stop(), timeout=30)
            self.server = None

    def close(self) -> None:
        self.stop()
        self.loop.close()


async def _child_folder(parent: Any, ns: int, name: str) -> Any:
    for child in await parent.get_children():
        if (await child.read_browse_name()).Name == name:
            return child
    return await parent.add_folder(ns, name)


# -- the gateway -----------------------------------------------------------------------


class GatewayProcess:
    """The gateway as a real process (``python -m plantstream.edge``), for SIGTERM and ``kill -9``."""

    def __init__(self, settings: Settings, config_file: Path, log: Path) -> None:
        self.settings = settings
        self.config_file = config_file
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = child_env(self.settings)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plantstream.edge", str(self.config_file)],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        code = self.proc.wait(timeout)
        self.proc = None
        return code

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


# -- Kafka -----------------------------------------------------------------------------


@dataclass
class TopicContent:
    events: list[Any]

    def by_machine(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for e in self.events:
            out.setdefault(e.machine_id, []).append(e)
        return out


def read_topic(settings: Settings, topic: str, timeout: float = 60.0, payload: type = Telemetry) -> TopicContent:
    """Every event in ``topic`` (contract type ``payload``), in partition order (read to each partition's end)."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    codec = Codec(payload)
    cons = consumer(settings, **{"group.id": "edge-tests", "enable.partition.eof": True})
    events: list[Any] = []
    try:
        meta = cons.list_topics(topic, timeout=10)
        parts = sorted(meta.topics[topic].partitions)
        cons.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        open_parts = set(parts)
        deadline = time.monotonic() + timeout
        while open_parts and time.monotonic() < deadline:
            for msg in cons.consume(10_000, timeout=0.5):
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(msg.partition())
                    continue
                events.append(codec.decode(msg.value()))
        assert not open_parts, f"could not read {topic} partitions {open_parts} to the end"
    finally:
        cons.close()
    return TopicContent(events)


def scrape(port: int) -> dict[str, float]:
    """The gateway's ``/metrics`` as ``{'name{label="v"}': value}`` (empty if it does not answer)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


class PlantPublisher:
    """MQTT machines publishing every ``period_s`` in a thread until stopped; remembers what it sent."""

    def __init__(self, port: int, topics: dict[str, str], period_s: float = 0.02) -> None:
        self.pub = MqttPublisher(port, "plant-publisher")
        self.topics = topics  # machine -> MQTT topic
        self.period_s = period_s
        self.sent: dict[str, list[int]] = {m: [] for m in topics}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plant-publisher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ts = int(time.time() * 1000)
        while not self._stop.is_set():
            ts += 10
            for machine, topic in self.topics.items():
                self.pub.publish(topic, ts, {"torque": ts % 500 / 1.0})
                self.sent[machine].append(ts)
            self._stop.wait(self.period_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.pub.close()
