"""Serve a configured plant over its protocols until stopped (``plantstream simulate-serve``).

:class:`PlantServer` steps a :class:`.engine.PlantSimulator` at ``speed`` times real time
(one step per ``sample_period_s / speed`` wall seconds) and pushes every snapshot to
the plant's endpoints: an OPC UA server per ``opcua`` endpoint, a Modbus TCP server per
``modbus`` endpoint, an MQTT publisher per ``mqtt`` endpoint (with its own mosquitto
when the endpoint says ``managed_broker: true``).  Device faults from the engine take
OPC UA / Modbus servers down and bring them back on the same port; offline MQTT
machines stop publishing.  Ground truth goes to ``<out_dir>/ground_truth.jsonl``; the
machines' part counters and energy meters are kept in ``<out_dir>/controllers.json`` when
the plant stops and resumed from there at the next start, as a real controller keeps them.

Everything runs on one asyncio loop (asyncua and pymodbus are asyncio servers; paho
publishes from its own network thread).  :func:`serve_in_thread` runs a plant on a
background thread for tests and for callers that are not asyncio programs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from plantstream.simulator.engine import PlantSimulator, Snapshot
from plantstream.simulator.ground_truth import GroundTruthLog
from plantstream.simulator.plant_config import PlantConfig
from plantstream.simulator.protocols.modbus_server import ModbusEndpoint
from plantstream.simulator.protocols.mosquitto import MosquittoBroker
from plantstream.simulator.protocols.mqtt_publisher import MqttPublisher
from plantstream.simulator.protocols.opcua_server import OpcUaEndpoint


@dataclass
class ServeReport:
    steps: int = 0
    simulated_s: float = 0.0
    wall_s: float = 0.0
    outages: dict[str, int] = field(default_factory=dict)  # endpoint -> times taken offline


class PlantServer:
    """The plant on the wire.  ``await start()``, then ``await run(...)``, then ``await stop()``."""

    def __init__(
        self,
        plant: PlantConfig,
        out_dir: Path,
        *,
        speed: float = 1.0,
        start_ms: int | None = None,
        faults: bool = True,
        on_snapshot: Callable[[Snapshot], None] | None = None,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.plant, self.out_dir, self.speed = plant, Path(out_dir), speed
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ground_truth_path = self.out_dir / "ground_truth.jsonl"
        self.controllers_path = self.out_dir / "controllers.json"
        self._gt = GroundTruthLog(self.ground_truth_path)
        start = int(time.time() * 1000) if start_ms is None else start_ms
        kept = json.loads(self.controllers_path.read_text()) if self.controllers_path.exists() else None
        self.sim = PlantSimulator(plant, start, self._gt, faults=faults, controllers=kept)
        self.on_snapshot = on_snapshot
        self.last: Snapshot | None = None
        self.report = ServeReport()
        by_endpoint: dict[str, list] = {}
        for m in self.sim.machines:
            if m.endpoint is not None:
                by_endpoint.setdefault(m.endpoint, []).append(m)
        registers = {kind.value: dict(cfg.registers) for kind, cfg in plant.machine_types.items()}
        self.opcua: dict[str, OpcUaEndpoint] = {}
        self.modbus: dict[str, ModbusEndpoint] = {}
        self.mqtt: dict[str, MqttPublisher] = {}
        self.brokers: dict[str, MosquittoBroker] = {}
        for name, machines in by_endpoint.items():
            ep = plant.endpoints[name]
            if ep.protocol == "opcua":
                self.opcua[name] = OpcUaEndpoint(name, ep, machines)
            elif ep.protocol == "modbus":
                self.modbus[name] = ModbusEndpoint(name, ep, machines, registers)
            else:
                self.mqtt[name] = MqttPublisher(name, ep, machines, client_id=f"plantstream-sim-{plant.name}-{name}")
                if ep.managed_broker:
                    self.brokers[name] = MosquittoBroker(ep.port, self.out_dir / f"mosquitto-{name}", ep.host)

    async def start(self) -> None:
        """Start brokers and servers and serve the first step's values."""
        for broker in self.brokers.values():
            await asyncio.to_thread(broker.start)
        snapshot = self._step()
        for server in (*self.opcua.values(), *self.modbus.values()):
            await server.update(self._mine(server.machines, snapshot))
            await server.start()
        for publisher in self.mqtt.values():
            await asyncio.to_thread(publisher.start)
            publisher.update(self._mine(publisher.machines, snapshot), self._parts(publisher.machines, snapshot))

    @staticmethod
    def _mine(machines: list, snapshot: Snapshot) -> list:
        ids = {m.machine_id for m in machines}
        return [r for r in snapshot.readings if r.machine.machine_id in ids]

    @staticmethod
    def _parts(machines: list, snapshot: Snapshot) -> list:
        ids = {m.machine_id for m in machines}
        return [p for p in snapshot.parts if p.machine_id in ids]

    def _step(self) -> Snapshot:
        snapshot = self.sim.step()
        self.last = snapshot
        self.report.steps += 1
        self.report.simulated_s += self.sim.period_ms / 1000
        if snapshot.ground_truth:
            self._gt.flush()
        if self.on_snapshot is not None:
            self.on_snapshot(snapshot)
        return snapshot

    async def _publish(self, snapshot: Snapshot, *, again: bool = False) -> None:
        """Serve a step on every endpoint (``again``: the same step once more, without its
        parts: what a held device keeps reporting)."""
        for name, server in (*self.opcua.items(), *self.modbus.items()):
            offline = name in snapshot.offline_endpoints
            if offline and server.online:
                await server.stop()
                self.report.outages[name] = self.report.outages.get(name, 0) + 1
            await server.update(self._mine(server.machines, snapshot))
            if not offline and not server.online:
                await server.start()
        for publisher in self.mqtt.values():
            parts = [] if again else self._parts(publisher.machines, snapshot)
            publisher.update(self._mine(publisher.machines, snapshot), parts)

    async def run(
        self, minutes: float | None = None, stop: asyncio.Event | None = None, stepping: asyncio.Event | None = None
    ) -> ServeReport:
        """Step until ``minutes`` of simulated time have passed or ``stop`` is set.

        ``stepping``: while it is clear the plant holds still - it keeps serving its last
        state (devices stay up, values stay put) but does not advance.  The live demo holds
        the plant until the gateway is connected and once more at the end until the gateway
        has read the final state, so every part the plant made is one the gateway saw.
        """
        stop = stop or asyncio.Event()
        wall_step = self.sim.period_ms / 1000 / self.speed
        steps = None if minutes is None else round(minutes * 60_000 / self.sim.period_ms)
        began = time.monotonic()
        next_at = began
        done = 0
        while not stop.is_set() and (steps is None or done < steps):
            if stepping is not None and not stepping.is_set():
                if self.last is not None:  # a held device still reports its (unchanged) state
                    await self._publish(self.last, again=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wall_step)
                next_at = time.monotonic()  # held: no burst to catch up afterwards
                continue
            await self._publish(self._step())
            done += 1
            next_at += wall_step
            with contextlib.suppress(TimeoutError):  # pace to the speed factor, wake early on stop
                await asyncio.wait_for(stop.wait(), timeout=max(next_at - time.monotonic(), 0.0))
        self.report.wall_s = time.monotonic() - began
        return self.report

    async def stop(self) -> None:
        for publisher in self.mqtt.values():
            await asyncio.to_thread(publisher.stop)
        for server in (*self.opcua.values(), *self.modbus.values()):
            await server.stop()
        for broker in self.brokers.values():
            await asyncio.to_thread(broker.stop)
        self._gt.close()
        # The machines' controllers keep their counters and meters for the next start.
        tmp = self.controllers_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.sim.controller_state(), sort_keys=True))
        tmp.replace(self.controllers_path)


async def serve_plant(
    plant: PlantConfig,
    out_dir: Path,
    *,
    speed: float = 1.0,
    minutes: float | None = None,
    start_ms: int | None = None,
    stop: asyncio.Event | None = None,
) -> ServeReport:
    """Serve ``plant`` until ``minutes`` simulated minutes passed or ``stop`` is set (the CLI's loop)."""
    server = PlantServer(plant, out_dir, speed=speed, start_ms=start_ms)
    try:
        await server.start()
        return await server.run(minutes, stop)
    finally:
        await server.stop()


class RunningPlant:
    """A :class:`PlantServer` running on a background thread (see :func:`serve_in_thread`)."""

    def __init__(self, server: PlantServer) -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.stepping: asyncio.Event | None = None
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def _call(self, fn: Callable[[], None]) -> None:
        if self.loop is None:
            return
        if self.loop.is_closed():  # the plant ended on its own: say why instead of failing to stop it
            if self.error is not None:
                raise RuntimeError(f"the plant stopped: {self.error!r}") from self.error
            return
        self.loop.call_soon_threadsafe(fn)

    def stop(self) -> None:
        if self.stop_event is not None:
            self._call(self.stop_event.set)

    def resume(self) -> None:
        """Let the plant advance (see :meth:`PlantServer.run`)."""
        if self.stepping is not None:
            self._call(self.stepping.set)

    def hold(self) -> None:
        """Hold the plant still while it keeps serving its last state."""
        if self.stepping is not None:
            self._call(self.stepping.clear)


@contextlib.contextmanager
def serve_in_thread(
    plant: PlantConfig,
    out_dir: Path,
    *,
    speed: float = 1.0,
    start_ms: int | None = None,
    faults: bool = True,
    ready_timeout: float = 30.0,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    held: bool = False,
) -> Iterator[RunningPlant]:
    """Serve ``plant`` on a background thread until the ``with`` block ends.

    Returns once every endpoint is up (raises if that takes longer than ``ready_timeout``).
    ``held``: serve the first state but do not advance until :meth:`RunningPlant.resume`.
    """
    server = PlantServer(plant, out_dir, speed=speed, start_ms=start_ms, faults=faults, on_snapshot=on_snapshot)
    running = RunningPlant(server)

    async def main() -> None:
        running.loop = asyncio.get_running_loop()
        running.stop_event = asyncio.Event()
        running.stepping = asyncio.Event()
        if not held:
            running.stepping.set()
        try:
            await server.start()
            running.ready.set()
            await server.run(None, running.stop_event, running.stepping)
        except BaseException as exc:
            running.error = exc
            running.ready.set()
        finally:
            await server.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="plant-server", daemon=True)
    thread.start()
    if not running.ready.wait(ready_timeout):
        running.stop()
        thread.join(10)
        raise TimeoutError(f"the plant did not come up within {ready_timeout} s")
    if running.error is not None:
        thread.join(10)
        raise RuntimeError(f"the plant failed to start: {running.error!r}") from running.error
    try:
        yield running
    finally:
        running.stop()
        thread.join(30)
