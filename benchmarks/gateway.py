"""Edge gateway benchmark: events/s from MQTT, OPC UA and Modbus into Kafka, buffer replay rate.

Everything is real: a mosquitto broker, an asyncua server, a pymodbus TCP server (each
on a free loopback port) and the local Kafka (started if not running).  Each phase runs
one gateway (in this process) against one protocol and measures from the first value
offered until Kafka confirmed the last one (``events_out``), so the figure includes the
durable buffer (fsynced SQLite) and the idempotent producer.  The replay phase fills a
buffer while Kafka is unreachable, then measures how fast a gateway drains it.

OPC UA servers run in a child process (the gateway would not share a CPU with its PLCs).
Two OPC UA figures: a burst (every tag changing up to 10 times a second; events/s
delivered, next to what the server offered) and the tag ceiling - the most tags, each
changing once a second, that one gateway keeps up with in real time (everything in Kafka
within ``CATCH_UP_S`` of the last change), found by doubling until a count fails.

Each step (MQTT, OPC UA burst, Modbus, buffer replay, OPC UA ceiling search) runs in a
guard (:class:`StepRunner`): a step that fails is recorded as ``{"status": "failed",
"error": ...}`` with whatever it measured before failing, and the next step runs.  The
table and the JSON line always appear; ``failed_steps`` lists what could not run, and
``plantstream bench`` then exits 1.  A benchmark that dies in its last step must not
take the figures of the others with it.

Run: ``plantstream bench gateway [--quick] [--json]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.contract import Quality
from plantstream.edge.buffer import EdgeStore, Pending
from plantstream.edge.collectors.base import Reading
from plantstream.edge.config import GatewayConfig, parse_config
from plantstream.edge.gateway import BUFFER_FILE, Gateway, GatewayInThread, edge_dir
from plantstream.edge.normalize import Identity
from plantstream.services.isolated import pick_free_port
from plantstream.services.supervisor import ensure_running
from plantstream.settings import Settings
from plantstream.waiting import wait_until

#: A tag count is sustained when the gateway has everything in Kafka this long after the last change.
CATCH_UP_S = 3.0
#: Budget for building an OPC UA tag server: a base plus this much per tag.  asyncua 2.1 scans
#: the folder's references on every add, so the build grows faster than the tag count
#: (measured here: 1,000 tags 0.4 s, 4,000 tags 14 s; a slower machine took > 120 s for
#: 16,000); the budget is generous, and the wait ends at once if the server process dies.
SERVER_BUILD_BASE_S = 60.0
SERVER_BUILD_PER_TAG_S = 0.05
SIGNALS = ("air_temperature", "torque", "vibration", "power", "current", "pressure", "belt_speed", "rotational_speed")


# Finer polling than the default: these waits end timed intervals.
_wait = functools.partial(wait_until, poll_s=0.02)


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
    """A gateway forwarding to its own telemetry topic (``topic`` becomes the topic prefix)."""
    kafka = settings.kafka.model_copy(update={"topic_prefix": f"{topic}."})
    with GatewayInThread(settings.model_copy(update={"kafka": kafka}), config) as running:
        yield running.gateway


def _out(gw: Gateway, protocol: str) -> float:
    return gw.metrics.value("plantstream_edge_events_out_total", protocol=protocol)


def _settings(settings: Settings, state: Path, name: str) -> Settings:
    # Peers polled every 10 ms on a busy machine miss a 30 ms staleness limit now and then;
    # stale markers would be counted as events, so staleness is out of the measurement.
    edge = settings.edge.model_copy(update={"stale_multiple": 1_000.0})
    return settings.model_copy(update={"state_dir": state / name, "edge": edge})


def _mqtt(settings: Settings, state: Path, messages: int) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    port = pick_free_port()
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


class _TagServer:
    """An asyncua server in a child process whose ``tags`` Doubles all change every ``period_s``.

    A separate process, so the gateway under test has the CPU it would have on its own
    edge box instead of sharing an interpreter with the server.  Changes start at
    :meth:`go`; ``rounds`` counts the completed ones (each writes every tag once).
    """

    def __init__(self, tags: int, period_s: float, max_rounds: int = 0) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.tags = tags
        self.port = pick_free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/plantstream/"
        self._rounds, self._ready, self._go, self._stop = ctx.Value("l", 0), ctx.Event(), ctx.Event(), ctx.Event()
        self._built = ctx.Value("l", 0)
        kwargs = {
            "port": self.port,
            "tags": tags,
            "period_s": period_s,
            "max_rounds": max_rounds,
            "ready": self._ready,
            "go": self._go,
            "rounds": self._rounds,
            "stop": self._stop,
            "built": self._built,
        }
        self._process = ctx.Process(target=_serve_changing_tags, kwargs=kwargs, daemon=True)
        t0 = time.monotonic()
        self._process.start()
        budget = SERVER_BUILD_BASE_S + SERVER_BUILD_PER_TAG_S * tags
        try:
            while not self._ready.wait(0.5):
                if not self._process.is_alive():
                    raise RuntimeError(
                        f"the {tags:,}-tag OPC UA server exited (code {self._process.exitcode}) "
                        f"after building {self._built.value:,} tags"
                    )
                if time.monotonic() - t0 > budget:
                    raise TimeoutError(
                        f"the {tags:,}-tag OPC UA server was not up after {budget:.0f} s "
                        f"({SERVER_BUILD_BASE_S:g} s + {SERVER_BUILD_PER_TAG_S * 1000:g} ms per tag): "
                        f"{self._built.value:,} tags built"
                    )
        except BaseException:
            self.close()
            raise
        self.build_s = time.monotonic() - t0

    @property
    def rounds(self) -> int:
        return int(self._rounds.value)

    def go(self) -> None:
        self._go.set()

    def stop_changes(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._go.set()
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)

    def gateway_config(self) -> GatewayConfig:
        return parse_config(
            {
                "machines": [
                    {
                        "machine_id": "m0",
                        "area": "a",
                        "line": "l",
                        "protocol": "opcua",
                        "endpoint": self.endpoint,
                        "interval_s": 1.0,
                        "opcua": {"publishing_interval_ms": 100, "browse_interval_s": 600},
                    }
                ]
            }
        )


def _serve_changing_tags(
    *, port: int, tags: int, period_s: float, max_rounds: int, ready: Any, go: Any, rounds: Any, stop: Any, built: Any
) -> None:
    """The child process of :class:`_TagServer`; ``built`` counts the tags added so far."""
    from asyncua import Server, ua

    async def main() -> None:
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/plantstream/")
        ns = await server.register_namespace("urn:plantstream:plant")
        folder = await server.nodes.objects.add_folder(ns, "Plant")
        for part in ("plant-1", "a", "l", "m0"):
            folder = await folder.add_folder(ns, part)
        nodes = []
        for i in range(tags):
            nodes.append((await folder.add_variable(ns, f"tag{i:05d}", 0.0)).nodeid)
            if i % 500 == 499:
                built.value = i + 1
                if stop.is_set():  # the parent gave up waiting (build budget): no server
                    return
        built.value = tags
        await server.start()
        ready.set()
        try:
            while not go.is_set():
                await asyncio.sleep(0.02)
            r = 0
            began = time.monotonic()
            while not stop.is_set() and (max_rounds == 0 or r < max_rounds):
                r += 1
                value = ua.DataValue(ua.Variant(float(r), ua.VariantType.Double), SourceTimestamp=datetime.now(UTC))
                for node in nodes:
                    await server.write_attribute_value(node, value)
                with rounds.get_lock():
                    rounds.value = r
                await asyncio.sleep(max(0.0, began + r * period_s - time.monotonic()))
            while not stop.is_set():  # keep serving until told to go
                await asyncio.sleep(0.05)
        finally:
            await server.stop()

    asyncio.run(main())


def _opcua(settings: Settings, state: Path, tags: int, rounds: int) -> tuple[float, float]:
    """Burst: every tag changes ``rounds`` times at up to 10 rounds/s.

    Returns (events/s delivered into Kafka, events/s the server offered).  Delivery is
    timed until it goes quiet: changes the server makes faster than the gateway takes
    them are coalesced by OPC UA (latest value wins), so not every change is an event.
    """
    server = _TagServer(tags, period_s=0.1, max_rounds=rounds)
    try:
        topic = f"bench-opcua-{server.port}"
        with _gateway(_settings(settings, state, "opcua"), server.gateway_config(), topic) as gw:
            _wait(lambda: len(gw.signals.get("m0", [])) == tags, 300, "opcua subscriptions")
            _wait(lambda: _out(gw, "opcua") >= tags, 60, "initial values")
            start_out = _out(gw, "opcua")
            t0 = time.perf_counter()
            server.go()
            _wait(lambda: server.rounds >= rounds, 300, "the server's changes")
            offered_s = time.perf_counter() - t0
            last, last_at = _out(gw, "opcua"), time.perf_counter()
            while time.perf_counter() - last_at < 2.0:  # quiet for 2 s: everything taken is delivered
                time.sleep(0.05)
                now = _out(gw, "opcua")
                if now != last:
                    last, last_at = now, time.perf_counter()
    finally:
        server.close()
    return (last - start_out) / (last_at - t0), tags * rounds / offered_s


def _opcua_tags_sustained(
    settings: Settings, state: Path, tag_counts: list[int], seconds: float, console: Console, *, out: dict[str, Any]
) -> None:
    """The most tags (all changing once a second) one gateway forwards to Kafka in real time.

    Counts are tried in increasing order until one is not sustained (see :func:`_opcua_ceiling_run`).
    Results go into ``out`` as each count finishes, so a count that cannot run (its server
    not built in time, say) leaves the ones before it reported.
    """
    rows: list[dict[str, Any]] = out.setdefault("opcua_ceiling", [])
    out["opcua_tags_sustained"] = 0
    out["opcua_tags_sustained_rule"] = f"all change 1/s; all in Kafka <= {CATCH_UP_S:g} s after the last change"
    for tags in tag_counts:
        console.print(f"  OPC UA tag ceiling: {tags:,} tags")
        row = _opcua_ceiling_run(settings, state, tags, seconds)
        rows.append(row)
        if not row["sustained"]:
            break
        out["opcua_tags_sustained"] = tags


def _opcua_ceiling_run(settings: Settings, state: Path, tags: int, seconds: float) -> dict[str, Any]:
    """Run ``seconds`` with ``tags`` tags changing 1/s, stop the changes, time the catch-up.

    Sustained: the server kept its pace (>= 0.9 rounds/s) and the gateway had every
    change in Kafka within ``CATCH_UP_S`` of the last one.
    """
    server = _TagServer(tags, period_s=1.0)
    build_s = server.build_s
    try:
        topic = f"bench-ceil-{server.port}"
        with _gateway(_settings(settings, state, f"opcua-ceiling-{tags}"), server.gateway_config(), topic) as gw:
            _wait(lambda: len(gw.signals.get("m0", [])) == tags, 300, "opcua subscriptions")
            _wait(lambda: _out(gw, "opcua") >= tags, 60, "initial values")
            out0, t0 = _out(gw, "opcua"), time.monotonic()
            server.go()
            while time.monotonic() - t0 < seconds:
                time.sleep(0.05)
            server.stop_changes()
            stopped, done_rounds = time.monotonic(), server.rounds
            target = out0 + done_rounds * tags
            try:
                _wait(lambda: _out(gw, "opcua") >= target, CATCH_UP_S, "catch-up")
                catch_up: float | None = time.monotonic() - stopped
            except TimeoutError:
                catch_up = None
            server_pace = done_rounds / (stopped - t0)
    finally:
        server.close()
    return {
        "tags": tags,
        "server_build_s": round(build_s, 1),
        "server_rounds_per_s": round(server_pace, 2),
        "catch_up_s": None if catch_up is None else round(catch_up, 2),
        "sustained": catch_up is not None and server_pace >= 0.9,
    }


def _modbus(settings: Settings, state: Path, units: int, seconds: float) -> float:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    port = pick_free_port()
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


@dataclass(frozen=True)
class StepOutcome:
    status: str  # ok | failed | interrupted | skipped
    seconds: float
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 1)}
        if self.error:
            out["error"] = self.error
        return out


class StepRunner:
    """Runs benchmark steps so that one failing is recorded and the others still run.

    A step is ``step(out)``: it puts its figures into ``out`` as it measures them, so a
    step that fails half-way keeps what it had (the tag ceiling's counts before the one
    that could not run).  Exceptions are recorded as ``failed`` with their message and
    their traceback printed; Ctrl-C marks the running step ``interrupted``, skips the
    rest and still leaves the report to be printed.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.figures: dict[str, Any] = {}
        self.steps: dict[str, StepOutcome] = {}
        self.interrupted = False

    def run(self, name: str, description: str, step: Callable[[dict[str, Any]], Any], *, always: bool = False) -> bool:
        """Run one step; True if it completed.  ``always``: also after an interrupt (clean-up)."""
        if self.interrupted and not always:
            self.skip(name, "not run: the benchmark was interrupted")
            return False
        out: dict[str, Any] = {}
        t0 = time.monotonic()
        try:
            with self.console.status(description):
                step(out)
        except KeyboardInterrupt:
            self.interrupted = True
            self.steps[name] = StepOutcome("interrupted", time.monotonic() - t0, "interrupted (Ctrl-C)")
            return False
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self.steps[name] = StepOutcome("failed", time.monotonic() - t0, error)
            self.console.print(f"step {name} failed: {error}", style="red", markup=False, highlight=False)
            self.console.print("".join(traceback.format_exception(exc)[-12:]), markup=False, highlight=False)
            return False
        finally:
            self.figures.update(out)
        self.steps[name] = StepOutcome("ok", time.monotonic() - t0)
        return True

    def skip(self, name: str, reason: str) -> None:
        self.steps[name] = StepOutcome("skipped", 0.0, reason)

    @property
    def failed(self) -> list[str]:
        return [name for name, outcome in self.steps.items() if outcome.status != "ok"]


def finish(
    runner: StepRunner, console: Console, *, params: dict[str, Any], quick: bool, write: bool = True
) -> dict[str, Any]:
    """The report: figures + per-step outcome, written to the results file and printed.

    Always complete in form: a failed step shows as failed (``failed_steps``), its
    figures are those it got before failing, and every other step's figures are there.
    """
    figures: dict[str, Any] = {
        "quick": quick,
        **params,
        **{k: v for k, v in runner.figures.items() if k != "opcua_ceiling"},
        "steps": {name: outcome.as_dict() for name, outcome in runner.steps.items()},
        "failed_steps": runner.failed,
    }
    ceiling_rows: list[dict[str, Any]] = runner.figures.get("opcua_ceiling", [])
    if write:
        write_results("gateway", {**figures, "opcua_ceiling": ceiling_rows}, quick=quick)
    table = Table("figure", "value", title="edge gateway -> Kafka (durable buffer, acks=all)")
    for key, value in figures.items():
        if key in ("steps", "failed_steps"):
            continue
        table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
    console.print(table)
    steps = Table("step", "status", "seconds", "error", title="steps")
    for name, outcome in runner.steps.items():
        status = outcome.status if outcome.status == "ok" else f"[red]{outcome.status}[/red]"
        steps.add_row(name, status, f"{outcome.seconds:.1f}", outcome.error[:160])
    console.print(steps)
    ceiling = Table("tags", "build s", "rounds/s", "catch-up s", "sustained", title="OPC UA tags, each changing 1/s")
    for row in ceiling_rows:
        cells = (row["server_build_s"], row["server_rounds_per_s"], row["catch_up_s"], row["sustained"])
        ceiling.add_row(f"{row['tags']:,}", *(str(c) for c in cells))
    console.print(ceiling)
    if runner.failed:
        console.print(f"steps that did not complete: {', '.join(runner.failed)}", style="red", markup=False)
    return figures


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:
    """Run the benchmark; returns the figures (also written to benchmarks/results/gateway.json).

    ``failed_steps`` in the figures lists the steps that did not complete (``plantstream
    bench`` exits 1 then); everything else measured is reported all the same.
    """
    mqtt_messages = 5_000 if quick else 50_000
    tags, rounds = (1_000, 20) if quick else (4_000, 50)
    modbus_units, modbus_s = (8, 3.0) if quick else (20, 10.0)
    replay_events = 50_000 if quick else 500_000
    ceiling_counts, ceiling_s = ([500, 1_000], 5.0) if quick else ([2_000, 4_000, 8_000, 16_000, 32_000, 64_000], 10.0)
    params: dict[str, Any] = {
        "mqtt_messages": mqtt_messages,
        "opcua_tags": tags,
        "opcua_rounds": rounds,
        "modbus_devices": modbus_units,
        "modbus_poll_interval_s": 0.01,
        "replay_events": replay_events,
    }
    runner = StepRunner(console)
    stack = contextlib.ExitStack()
    try:
        platform_up = runner.run(
            "platform",
            "starting / checking S3 + Kafka",
            lambda _out: stack.enter_context(ensure_running(settings, services=["seaweedfs", "tansu"])),
        )
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))

        def mqtt(out: dict[str, Any]) -> None:
            out["mqtt_events_per_s"] = round(_mqtt(settings, state, mqtt_messages))

        def opcua(out: dict[str, Any]) -> None:
            rate, offered = _opcua(settings, state, tags, rounds)
            out["opcua_events_per_s"], out["opcua_offered_events_per_s"] = round(rate), round(offered)

        def modbus(out: dict[str, Any]) -> None:
            out["modbus_events_per_s"] = round(_modbus(settings, state, modbus_units, modbus_s))

        def replay(out: dict[str, Any]) -> None:
            out["replay_events_per_s"] = round(_replay(settings, state, replay_events))

        def ceiling(out: dict[str, Any]) -> None:
            _opcua_tags_sustained(settings, state, ceiling_counts, ceiling_s, console, out=out)

        steps: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
            ("mqtt", "MQTT -> Kafka", mqtt),
            ("opcua_burst", "OPC UA -> Kafka", opcua),
            ("modbus", "Modbus -> Kafka", modbus),
            ("buffer_replay", "buffer replay -> Kafka", replay),
            ("opcua_ceiling", "OPC UA tag ceiling search", ceiling),
        ]
        for name, description, step in steps:
            if platform_up:
                runner.run(name, description, step)
            else:
                runner.skip(name, "not run: the platform did not start")
    finally:
        # Stopping what the benchmark started is part of the run: a failure there is reported too.
        runner.run("cleanup", "stopping what the benchmark started", lambda _out: stack.close(), always=True)
    return finish(runner, console, params=params, quick=quick)
