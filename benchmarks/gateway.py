"""Edge gateway benchmark: events/s from MQTT, OPC UA and Modbus into Kafka, buffer replay rate.

Everything is real: a mosquitto broker, an asyncua server, a pymodbus TCP server (each
on a free loopback port) and the local Kafka (started if not running).  Each phase runs
one gateway (in this process) against one protocol and measures from the first value
offered until Kafka confirmed the last one (``events_out``), so the figure includes the
durable buffer (fsynced SQLite) and the idempotent producer.  The replay phase fills a
buffer while Kafka is unreachable, then measures how fast a gateway drains it.

Run: ``plantstream bench gateway [--quick] [--json]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from plantstream.contract import Quality
from plantstream.edge.buffer import EdgeStore, Pending
from plantstream.edge.collectors.base import Reading
from plantstream.edge.config import GatewayConfig, parse_config
from plantstream.edge.gateway import BUFFER_FILE, Gateway, edge_dir
from plantstream.edge.normalize import Identity
from plantstream.services.supervisor import ensure_running
from plantstream.settings import Settings

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "gateway.json"
SIGNALS = ("air_temperature", "torque", "vibration", "power", "current", "pressure", "belt_speed", "rotational_speed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: timed out waiting for {what}")
        time.sleep(0.02)


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 120) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@contextlib.contextmanager
def _gateway(settings: Settings, config: GatewayConfig, topic: str) -> Iterator[Gateway]:
    loop = _Loop()

    async def make() -> Gateway:
        return Gateway(settings, config, topic=topic)

    gw: Gateway = loop.call(make())
    done = asyncio.run_coroutine_threadsafe(gw.run(), loop.loop)
    try:
        yield gw
    finally:
        loop.loop.call_soon_threadsafe(gw.stop_event.set)
        done.result(60)
        loop.close()


def _out(gw: Gateway, protocol: str) -> float:
    return gw.metrics.value("plantstream_edge_events_out_total", protocol=protocol)


def _settings(settings: Settings, state: Path, name: str) -> Settings:
    return settings.model_copy(update={"state_dir": state / name})


def _mqtt(settings: Settings, state: Path, messages: int) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    port = _free_port()
    conf = state / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n")
    broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
    machines = 4
    config = parse_config(
        {
            "gateway_id": "bench-gw",
            "machines": [
                {
                    "machine_id": f"m{i}",
                    "area": "a",
                    "line": "l",
                    "protocol": "mqtt",
                    "endpoint": f"mqtt://127.0.0.1:{port}",
                    "interval_s": 60,
                }
                for i in range(machines)
            ],
        }
    )
    try:
        time.sleep(0.3)  # mosquitto binds within milliseconds; the gateway retries anyway
        with _gateway(_settings(settings, state, "mqtt"), config, f"bench-mqtt-{port}") as gw:
            _wait(lambda: all(gw.connected.values()), 30, "mqtt subscription")
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
            pub.max_inflight_messages_set(1000)
            pub.max_queued_messages_set(0)
            pub.connect("127.0.0.1", port)
            pub.loop_start()
            base = int(time.time() * 1000)
            t0 = time.perf_counter()
            for k in range(messages):
                body = json.dumps({"ts": base + k, "values": dict.fromkeys(SIGNALS, float(k % 100))})
                pub.publish(f"plantstream/v1/plant-1/a/l/m{k % machines}/telemetry", body, qos=1)
            total = messages * len(SIGNALS)
            _wait(lambda: _out(gw, "mqtt") >= total, 600, "mqtt events in Kafka")
            seconds = time.perf_counter() - t0
            pub.disconnect()
            pub.loop_stop()
    finally:
        broker.terminate()
        broker.wait(10)
    return total / seconds


def _opcua(settings: Settings, state: Path, tags: int, rounds: int) -> float:
    from asyncua import Server, ua

    port = _free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}/plantstream/"
    loop = _Loop()
    nodes: list[Any] = []

    async def start() -> Any:
        server = Server()
        await server.init()
        server.set_endpoint(endpoint)
        ns = await server.register_namespace("urn:plantstream:plant")
        folder = await server.nodes.objects.add_folder(ns, "Plant")
        for part in ("plant-1", "a", "l", "m0"):
            folder = await folder.add_folder(ns, part)
        for i in range(tags):
            nodes.append(await folder.add_variable(ns, f"tag{i:05d}", 0.0))
        await server.start()
        return server

    async def write_round(r: int) -> None:
        when = datetime.now(UTC)
        for node in nodes:
            await node.write_value(ua.DataValue(ua.Variant(float(r), ua.VariantType.Double), SourceTimestamp=when))

    server = loop.call(start())
    config = parse_config(
        {
            "machines": [
                {
                    "machine_id": "m0",
                    "area": "a",
                    "line": "l",
                    "protocol": "opcua",
                    "endpoint": endpoint,
                    "interval_s": 1.0,
                    "opcua": {"publishing_interval_ms": 100, "browse_interval_s": 30},
                }
            ]
        }
    )
    try:
        with _gateway(_settings(settings, state, "opcua"), config, f"bench-opcua-{port}") as gw:
            _wait(lambda: len(gw.signals.get("m0", [])) == tags, 120, "opcua subscriptions")
            _wait(lambda: _out(gw, "opcua") >= tags, 60, "initial values")
            start_out = _out(gw, "opcua")
            t0 = time.perf_counter()
            for r in range(1, rounds + 1):
                loop.call(write_round(r))
                time.sleep(0.12)  # > publishing interval: each round is one notification per tag
            _wait(lambda: _out(gw, "opcua") - start_out >= tags * rounds, 300, "opcua events in Kafka")
            seconds = time.perf_counter() - t0
    finally:
        loop.call(server.stop())
        loop.close()
    return tags * rounds / seconds


def _modbus(settings: Settings, state: Path, units: int, seconds: float) -> float:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    port = _free_port()
    loop = _Loop()
    devices = [
        SimDevice(
            id=u,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, values=[16712, 0] * 50, datatype=DataType.REGISTERS)],
                [SimData(0, values=[0] * 100, datatype=DataType.REGISTERS)],
            ),
        )
        for u in range(1, units + 1)
    ]
    holder: dict[str, Any] = {}

    async def start() -> None:
        holder["server"] = ModbusTcpServer(devices, address=("127.0.0.1", port))
        holder["task"] = asyncio.ensure_future(holder["server"].serve_forever())
        await asyncio.sleep(0.3)

    loop.call(start())
    registers = {s: {"table": "holding", "address": 2 * i, "type": "float32"} for i, s in enumerate(SIGNALS)}
    config = parse_config(
        {
            "machines": [
                {
                    "machine_id": f"u{u}",
                    "area": "a",
                    "line": "l",
                    "protocol": "modbus",
                    "endpoint": f"modbus://127.0.0.1:{port}",
                    "interval_s": 0.01,
                    "modbus": {"unit_id": u, "registers": registers},
                }
                for u in range(1, units + 1)
            ]
        }
    )
    try:
        with _gateway(_settings(settings, state, "modbus"), config, f"bench-modbus-{port}") as gw:
            _wait(lambda: _out(gw, "modbus") > 0, 60, "modbus data")
            first = _out(gw, "modbus")
            t0 = time.perf_counter()
            time.sleep(seconds)
            rate = (_out(gw, "modbus") - first) / (time.perf_counter() - t0)
    finally:
        loop.call(holder["server"].shutdown())
        loop.close()
    return rate


def _replay(settings: Settings, state: Path, events: int) -> float:
    s = _settings(settings, state, "replay")
    store = EdgeStore(edge_dir(s) / BUFFER_FILE)
    ident = Identity("plant-1", "a", "l", "r0")
    now = int(time.time() * 1000)
    for start in range(0, events, 50_000):
        batch = [
            Pending(ident, "mqtt", Reading("r0", SIGNALS[k % len(SIGNALS)], float(k), Quality.GOOD, None, now))
            for k in range(start, min(events, start + 50_000))
        ]
        store.append(batch)
    store.close()
    with _gateway(s, parse_config({"machines": []}), f"bench-replay-{now}") as gw:
        t0 = time.perf_counter()
        _wait(lambda: gw.forwarder.delivered_total >= events, 600, "buffer replayed")
        seconds = time.perf_counter() - t0
    return events / seconds


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:
    """Run the benchmark; returns the figures (also written to benchmarks/results/gateway.json)."""
    mqtt_messages = 5_000 if quick else 50_000
    tags, rounds = (500, 5) if quick else (2_000, 10)
    modbus_units, modbus_s = (8, 3.0) if quick else (20, 10.0)
    replay_events = 50_000 if quick else 500_000
    with ensure_running(settings, services=["seaweedfs", "tansu"]), tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        with console.status("MQTT -> Kafka"):
            mqtt_rate = _mqtt(settings, state, mqtt_messages)
        with console.status("OPC UA -> Kafka"):
            opcua_rate = _opcua(settings, state, tags, rounds)
        with console.status("Modbus -> Kafka"):
            modbus_rate = _modbus(settings, state, modbus_units, modbus_s)
        with console.status("buffer replay -> Kafka"):
            replay_rate = _replay(settings, state, replay_events)
    figures: dict[str, Any] = {
        "quick": quick,
        "mqtt_events_per_s": round(mqtt_rate),
        "mqtt_messages": mqtt_messages,
        "opcua_events_per_s": round(opcua_rate),
        "opcua_tags": tags,
        "opcua_rounds": rounds,
        "modbus_events_per_s": round(modbus_rate),
        "modbus_devices": modbus_units,
        "modbus_poll_interval_s": 0.01,
        "replay_events_per_s": round(replay_rate),
        "replay_events": replay_events,
    }
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    table = Table("figure", "value", title="edge gateway -> Kafka (durable buffer, acks=all)")
    for key, value in figures.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
    console.print(table)
    return figures
