"""The gateway runner: collectors -> sequencer + durable buffer -> forwarder -> Kafka.

One asyncio loop runs every collector task (one per OPC UA / Modbus machine, one per
MQTT broker), the writer (which commits submitted readings to the buffer in batches,
then acknowledges them upstream), the forwarder, the staleness tracker and the
metrics refresher.  Buffer I/O runs on one dedicated thread.  A failing peer only
ever affects its own task.  SIGTERM/SIGINT stop collection, commit what was received,
give the forwarder a few seconds to deliver, and close; whatever is left is replayed
at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from plantstream.edge.buffer import EdgeStore, Pending
from plantstream.edge.collectors.base import Backoff, Observation, Reading, now_ms
from plantstream.edge.config import GatewayConfig, load_config
from plantstream.edge.forwarder import Forwarder
from plantstream.edge.metrics import GatewayMetrics, MetricsServer, serve_gateway_metrics
from plantstream.edge.normalize import Identity, stale_readings
from plantstream.edge.staleness import StalenessTracker
from plantstream.settings import Settings

log = logging.getLogger(__name__)
BUFFER_FILE = "buffer.sqlite"


def edge_dir(settings: Settings) -> Path:
    return settings.state_dir / "edge"


def config_path(settings: Settings) -> Path:
    return Path(settings.edge.config_file) if settings.edge.config_file else edge_dir(settings) / "gateway.yaml"


class Gateway:
    def __init__(self, settings: Settings, config: GatewayConfig) -> None:
        self.settings = settings
        self.config = config
        self.site = config.site or settings.site
        edge = settings.edge
        self.store = EdgeStore(
            edge_dir(settings) / BUFFER_FILE,
            max_events=edge.buffer_max_events,
            max_bytes=int(edge.buffer_max_mb * 1024 * 1024),
            policy=edge.overflow_policy,
            energy_interval_ms=round(edge.energy_interval_s * 1000),
            parts_from={m.machine_id: m.parts_source for m in config.machines},
        )
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-db")
        self.metrics = GatewayMetrics()
        self.machines = {m.machine_id: m for m in config.machines}
        self.identities = {m.machine_id: Identity(self.site, m.area, m.line, m.machine_id) for m in config.machines}
        self.forwarder = Forwarder(settings, self.store, self.db, self.metrics)
        self.staleness = StalenessTracker(
            {m.machine_id: m.interval_s for m in config.machines}, edge.stale_multiple, self._on_stale, self.metrics
        )
        self.signals: dict[str, list[str]] = {}
        self.connected: dict[str, bool] = dict.fromkeys(self.machines, False)
        self._pending: list[tuple[str, list[Reading], Callable[[], None] | None]] = []
        self._pending_event = asyncio.Event()
        self._last_overflow_log = 0.0
        self.stop_event = asyncio.Event()
        self._collectors_done = False  # set at shutdown: the writer returns once nothing is pending
        self.metrics_server: MetricsServer | None = None

    # -- Sink (called by collectors on the loop thread) ----------------------------------

    def submit(
        self, protocol: str, readings: Sequence[Observation], on_durable: Callable[[], None] | None = None
    ) -> None:
        self._pending.append((protocol, readings, on_durable))
        self._pending_event.set()

    def alive(self, machine_id: str) -> None:
        self.staleness.alive(machine_id)

    def connection(self, machine_id: str, protocol: str, up: bool) -> None:
        self.connected[machine_id] = up
        self.metrics.connection_up.labels(machine_id, protocol).set(1 if up else 0)

    def reconnect(self, protocol: str) -> None:
        self.metrics.reconnects.labels(protocol).inc()

    def known_signals(self, machine_id: str, signals: list[str]) -> None:
        self.signals[machine_id] = list(signals)

    def _on_stale(self, machine_id: str) -> None:
        signals = self.signals.get(machine_id, [])
        if signals:
            self.submit(self.machines[machine_id].protocol, stale_readings(machine_id, signals, now_ms()))

    # -- tasks ---------------------------------------------------------------------------

    async def _writer(self) -> None:
        """Commit submitted readings in batches; acknowledge upstream only after the commit."""
        loop = asyncio.get_running_loop()
        while True:
            await self._pending_event.wait()
            self._pending_event.clear()
            batch, self._pending = self._pending, []
            if not batch:
                if self._collectors_done:
                    return
                continue
            if self._collectors_done:
                self._pending_event.set()  # come back for the rest, then return
            items = [Pending(self.identities[r.machine_id], p, r) for p, rs, _ in batch for r in rs]
            result = await loop.run_in_executor(self.db, self.store.append, items)
            for protocol, n in result.stored.items():
                self.metrics.events_in.labels(protocol).inc(n)
            for protocol, n in result.repeats.items():
                self.metrics.repeats.labels(protocol).inc(n)
            if result.dropped:
                lost = sum(result.dropped.values())
                self.metrics.dropped.labels(self.store.policy).inc(lost)
                if time.monotonic() - self._last_overflow_log > 10:
                    self._last_overflow_log = time.monotonic()
                    log.warning(
                        "buffer full (%d events, %.1f MB): %s dropped %d events (%s); they show as gaps",
                        self.store.events,
                        self.store.bytes / 1e6,
                        self.store.policy,
                        lost,
                        dict(result.dropped),
                    )
            for _, _, ack in batch:
                if ack is not None:
                    ack()
            self.forwarder.wake.set()

    async def _refresh_metrics(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop_event.is_set():
            stats = await loop.run_in_executor(self.db, self.store.stats)
            self.metrics.buffer_events.set(stats.events)
            self.metrics.buffer_bytes.set(stats.bytes)
            age = 0.0 if stats.oldest_read_ts is None else max(0.0, (now_ms() - stats.oldest_read_ts) / 1000)
            self.metrics.buffer_oldest_age.set(age)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), timeout=1.0)

    def health(self) -> dict[str, Any]:
        """Connection and staleness per machine, Kafka and buffer state (``/healthz``)."""
        machines = {
            m: {"protocol": cfg.protocol, "connected": self.connected.get(m, False), "stale": m in self.staleness.stale}
            for m, cfg in self.machines.items()
        }
        kafka_up = self.metrics.value("plantstream_edge_kafka_up") == 1
        return {
            "ok": kafka_up and all(v["connected"] and not v["stale"] for v in machines.values()),
            "kafka_up": kafka_up,
            "buffer_events": self.store.events,
            "buffer_bytes": self.store.bytes,
            "machines": machines,
        }

    def _collectors(self) -> list[Any]:
        from plantstream.edge.collectors import modbus, mqtt, opcua

        edge = self.settings.edge
        stop = self.stop_event

        def backoff() -> Backoff:
            return Backoff(edge.backoff_min_s, edge.backoff_max_s)

        coros: list[Any] = []
        brokers: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for m in self.config.machines:
            if m.protocol == "opcua":
                coros.append(opcua.run_machine(self.site, m, self, stop, backoff()))
            elif m.protocol == "modbus":
                coros.append(modbus.run_machine(m, self.config.registers(m), self, stop, backoff()))
            else:
                brokers[(m.host, m.port)].append(m)
        for (host, port), machines in brokers.items():
            coros.append(
                mqtt.run_broker(
                    host=host,
                    port=port,
                    machines=machines,
                    site=self.site,
                    client_id=self.config.gateway_id,
                    sink=self,
                    stop=stop,
                    backoff=backoff(),
                )
            )
        return coros

    async def run(self) -> None:
        """Run until :attr:`stop_event` is set, then shut down cleanly."""
        if self.settings.metrics.enabled:
            self.metrics_server = serve_gateway_metrics(self.settings, self.metrics, self.health)
        collectors = [asyncio.create_task(c) for c in self._collectors()]
        writer = asyncio.create_task(self._writer())
        forwarder = asyncio.create_task(self.forwarder.run(self.stop_event))
        side = [
            asyncio.create_task(self.staleness.run(self.stop_event)),
            asyncio.create_task(self._refresh_metrics()),
        ]
        log.info("gateway running: %d machines, buffer %s", len(self.machines), self.store.path)
        try:
            await self.stop_event.wait()
        finally:
            self.stop_event.set()
            await asyncio.gather(*collectors, return_exceptions=True)
            self._collectors_done = True
            self._pending_event.set()
            await asyncio.gather(writer, return_exceptions=True)
            self.forwarder.wake.set()
            await asyncio.gather(forwarder, *side, return_exceptions=True)
            if self.metrics_server is not None:
                self.metrics_server.close()
            self.db.submit(self.store.close).result()
            self.db.shutdown()
            log.info("gateway stopped")


def run_gateway(settings: Settings, config: GatewayConfig | None = None) -> None:
    """Blocking entry point (CLI, ``python -m plantstream.edge``): runs until SIGTERM/SIGINT."""
    config = config or load_config(config_path(settings))

    async def main() -> None:
        gateway = Gateway(settings, config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.stop_event.set)
        await gateway.run()

    asyncio.run(main())


class GatewayInThread:
    """A gateway on its own event-loop thread in this process.

    For callers that are not asyncio programs and want the gateway's state at hand: the
    demo (which waits for the buffer to drain), the benchmark and the tests (which read
    its metrics directly).  ``stop()`` shuts it down as SIGTERM would.
    """

    def __init__(self, settings: Settings, config: GatewayConfig) -> None:
        import threading

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway", daemon=True)
        self._thread.start()

        async def make() -> Gateway:
            return Gateway(settings, config)

        self.gateway: Gateway = asyncio.run_coroutine_threadsafe(make(), self._loop).result(30)
        self._done: Future[None] = asyncio.run_coroutine_threadsafe(self.gateway.run(), self._loop)

    def metric(self, name: str, **labels: str) -> float:
        return self.gateway.metrics.value(name, **labels)

    def drained(self) -> bool:
        """Nothing buffered and nothing in flight: everything collected so far is in Kafka."""
        return self.gateway.store.events == 0 and not self.gateway.forwarder.in_flight

    def stop(self, timeout: float = 60.0) -> None:
        try:
            self._loop.call_soon_threadsafe(self.gateway.stop_event.set)
            self._done.result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def __enter__(self) -> GatewayInThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
