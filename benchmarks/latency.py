"""Latency benchmark: a live plant at >= 20,000 events/s through the whole flow, every branch on.

One command, on a platform it starts itself (SeaweedFS, Tansu on ``memory://`` storage, hot
store; free loopback ports, temporary state).  A simulated plant (the simulator's engine:
AI4I physics, failures, shifts, random sensor faults - spikes, stuck values, dropouts - so
that alerts are raised all the time) of ``MACHINES`` machines sampled every 0.1 s is produced
in real time by a separate process: every event's ``source_ts`` is the moment the simulated
device measured it, i.e. the wall clock when its step was due.  The plant flow runs as a
long-running process (windows, raw sinks and bronze, the anomaly and quality alert branches,
live OEE, the digital twin; recovery on), exactly as ``plantstream stream`` runs it.

Measured from the events themselves, during a measurement window after a warm-up:

* **source -> alert on Kafka**: a consumer of ``factory.alerts`` (assigned at the end,
  fetches of at most 5 ms) takes, for every alert record, the moment it received it minus
  the alert's ``source_ts`` - the event time of the reading that raised or cleared it;
* **source -> twin row visible in the hot store**: a poller asks the hot store every 50 ms
  for the newest ``as_of`` of a sample of machines' ``twin_state`` rows; when a machine's
  ``as_of`` moves from *a* to *b*, every step of that machine with a source time in
  ``(a, b]`` became visible by the end of that query: one sample per step (the events of a
  step share its source time), ``end of query - source time``.  Both figures are upper
  bounds (the poll interval and the query's own time are in them).

Also reported: the load actually produced (events/s of all four streams, counted in the
window), how far behind schedule the load generator was, the stream's own share of the alert
latency (``read_ts - source_ts``: when the branch concluded it), and whether the flow kept up
(``flow_catch_up_s``: how long after the load's last step was due the hot store held it;
``flow_kept_up``: within a deadline).  ``failed_steps`` lists what broke the measurement itself (the flow
exited, a measuring thread failed, no alert in the window); a flow that fell behind is a
result, reported as such.

Run: ``plantstream bench latency [--quick] [--json]``.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.services.isolated import isolated_settings
from plantstream.services.supervisor import CORE_SERVICES, LocalPlatform
from plantstream.settings import Settings

MACHINES = 400
SAMPLE_PERIOD_S = 0.1
PARTITIONS = 4
WARMUP_S, MEASURE_S = 40.0, 60.0
QUICK_WARMUP_S, QUICK_MEASURE_S = 20.0, 20.0
TWIN_POLL_S = 0.05
TWIN_SAMPLE_MACHINES = 24
DRAIN_TIMEOUT_S = 120.0
ALERT_P99_GOAL_MS = 100.0
TWIN_P99_GOAL_MS = 1_000.0


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:
    """Run the benchmark; returns the figures (also written to benchmarks/results/latency.json)."""
    warmup, measure = (QUICK_WARMUP_S, QUICK_MEASURE_S) if quick else (WARMUP_S, MEASURE_S)
    with tempfile.TemporaryDirectory(prefix="plantstream-bench-latency-") as tmp:
        bench = _platform_settings(Path(tmp))
        platform = LocalPlatform(bench, services=CORE_SERVICES, die_with_parent=True)
        with console.status("starting the local platform (memory-backed Tansu)"):
            platform.up()
        try:
            figures = _measure(bench, console, Path(tmp), warmup, measure)
        finally:
            platform.down()
    _print_table(console, figures)
    write_results("latency", figures, quick=quick)
    return figures


def _platform_settings(tmp: Path) -> Settings:
    plant_path = tmp / "plant.yaml"
    plant_path.write_text(yaml.safe_dump(_plant_document()))
    return isolated_settings(
        tmp / "state",
        plant_file=str(plant_path),
        kafka={"local_storage": "memory", "default_partitions": PARTITIONS, "topic_prefix": "bench."},
    )


def _plant_document() -> dict[str, Any]:
    """The benchmark's plant: ``MACHINES`` kafka-direct machines in lines of four, three 8-hour
    shifts, random sensor faults (the anomaly branch's work)."""
    from plantstream.simulator.plant import default_plant
    from plantstream.simulator.plant_config import FaultConfig, RandomFaults, Shift, plant_from_machines

    plant = plant_from_machines(default_plant(MACHINES, "plant-1"), seed=2026, sample_period_s=SAMPLE_PERIOD_S)
    plant = plant.model_copy(
        update={
            "shifts": [
                Shift(name="early", start="06:00", end="14:00"),
                Shift(name="late", start="14:00", end="22:00"),
                Shift(name="night", start="22:00", end="06:00"),
            ],
            "faults": FaultConfig(
                random=RandomFaults(spike_per_h=6.0, stuck_per_h=3.0, dropout_per_h=6.0, stuck_s=20.0, dropout_s=5.0)
            ),
        }
    )
    return plant.model_dump(mode="json")


# -- the load: a separate process, so the measuring threads never delay it --------------
@dataclass(frozen=True)
class _LoadCounters:
    """Shared with the load process: its start (s), events produced per second, ms behind
    schedule per step, telemetry events produced (sensor dropouts make fewer than machines x signals)."""

    started: Any
    counts: Any
    lag: Any
    telemetry: Any


def _load(settings: Settings, seconds: float, shared: _LoadCounters) -> None:
    """Produce the plant in real time for ``seconds``: step k is due at start + k x period and
    stamped so; counted in ``shared``."""
    started, counts, lag, telemetry = shared.started, shared.counts, shared.lag, shared.telemetry
    from plantstream.connect.kafka import producer
    from plantstream.contract import Codec
    from plantstream.contract.streams import STREAMS
    from plantstream.contract.topics import message_key, topic_name
    from plantstream.simulator.engine import PlantSimulator, snapshot_telemetry
    from plantstream.simulator.plant_config import load_plant

    plant = load_plant(settings.plant_file)
    period_ms = round(plant.sample_period_s * 1000)
    start_ms = (int(time.time() * 1000) // period_ms + 2) * period_ms
    engine = PlantSimulator(plant, start_ms - period_ms, seed=7, faults=True)
    topics = {spec.name: topic_name(settings, spec.topic) for spec in STREAMS}
    codecs = {spec.name: Codec(spec.payload) for spec in STREAMS}
    p = producer(settings, **{"linger.ms": 2})
    seqs: dict[str, int] = {}

    def take(machine_id: str) -> int:
        seqs[machine_id] = seqs.get(machine_id, -1) + 1
        return seqs[machine_id]

    def send(stream: str, events: list) -> int:
        topic, codec = topics[stream], codecs[stream]
        for event in events:
            while True:
                try:
                    p.produce(topic, codec.encode(event), message_key(event.machine_id))
                    break
                except BufferError:
                    p.poll(0.01)
        return len(events)

    steps = int(seconds * 1000 / period_ms)
    started.value = start_ms / 1000
    for step in range(steps):
        due_ms = start_ms + step * period_ms
        wait = due_ms / 1000 - time.time()
        if wait > 0:
            time.sleep(wait)  # real time: the plant measures on its own clock
        snapshot = engine.step()
        now_ms = int(time.time() * 1000)
        n = send("telemetry", snapshot_telemetry(snapshot, take, ingest_ts=now_ms))
        telemetry.value += n
        n += send("events", snapshot.events) + send("quality", snapshot.parts) + send("energy", snapshot.energy)
        p.poll(0)
        second = int((due_ms - start_ms) // 1000)
        if second < len(counts):
            counts[second] += n
        if step < len(lag):
            lag[step] = int(time.time() * 1000) - due_ms
    p.flush(60)


# -- measuring -------------------------------------------------------------------------
class _AlertLatency(threading.Thread):
    """Receive time - source_ts of every alert record whose reading lies in the window."""

    def __init__(self, settings: Settings, window: list[float]) -> None:
        super().__init__(daemon=True)
        self.settings, self.window = settings, window
        self.samples: list[float] = []
        self.concluded: list[float] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def _run(self) -> None:
        from confluent_kafka import OFFSET_END, TopicPartition

        from plantstream.connect.kafka import consumer
        from plantstream.contract import Alert, Codec
        from plantstream.contract.topics import ALERTS, topic_name

        topic = topic_name(self.settings, ALERTS)
        c = consumer(self.settings, **{"group.id": f"bench-latency-{uuid.uuid4().hex[:6]}", "fetch.wait.max.ms": 5})
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
        codec = Codec(Alert)
        self.ready.set()
        try:
            while not self.stop.is_set():
                for message in c.consume(1000, timeout=0.05):
                    if message.error() is not None:
                        continue
                    received = time.time() * 1000
                    alert = codec.decode(message.value())
                    if alert.source_ts is not None and self.window[0] <= alert.source_ts / 1000 < self.window[1]:
                        self.samples.append(received - alert.source_ts)
                        self.concluded.append(alert.read_ts - alert.source_ts)
        finally:
            c.close()


class _TwinLatency(threading.Thread):
    """End of query - source time of every step that became visible in ``twin_state``."""

    def __init__(self, settings: Settings, machines: list[str], window: list[float], period_ms: int) -> None:
        super().__init__(daemon=True)
        self.settings, self.machines, self.window, self.period_ms = settings, machines, window, period_ms
        self.samples: list[float] = []
        self.stale_rows = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            self.error = exc

    def _run(self) -> None:
        from plantstream.connect.hotstore import hotstore_client
        from plantstream.streaming.hot_tables import TWIN_STATE_TABLE

        client = hotstore_client(self.settings)
        sql = (
            f"SELECT machine_id, toUnixTimestamp64Milli(max(as_of)), max(stale) "
            f"FROM {self.settings.hotstore.database}.{TWIN_STATE_TABLE} "
            "WHERE machine_id IN {machines:Array(String)} GROUP BY machine_id"
        )
        seen: dict[str, int] = {}
        try:
            while not self.stop.is_set():
                began = time.monotonic()
                rows = client.query(sql, parameters={"machines": self.machines}).result_rows
                visible_ms = time.time() * 1000
                lo, hi = self.window[0] * 1000, self.window[1] * 1000
                for machine, as_of, stale in rows:
                    before = seen.get(machine)
                    seen[machine] = max(as_of, before or as_of)
                    self.stale_rows += bool(stale) and lo <= as_of < hi
                    if before is None or as_of <= before:
                        continue
                    steps = np.arange(before + self.period_ms, as_of + 1, self.period_ms)
                    steps = steps[(steps >= lo) & (steps < hi)]
                    self.samples.extend((visible_ms - steps).tolist())
                self.stop.wait(max(0.0, TWIN_POLL_S - (time.monotonic() - began)))
        finally:
            client.close()


def _percentiles(samples: list[float]) -> tuple[float | None, float | None, float | None]:
    if not samples:
        return None, None, None
    a = np.asarray(samples)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


def _hot_newest_ms(settings: Settings, table: str) -> int:
    """The newest event time in ``table`` (epoch ms; 0 if empty)."""
    from plantstream.connect.hotstore import hotstore_client

    client = hotstore_client(settings)
    try:
        sql = f"SELECT toUnixTimestamp64Milli(max(event_ts)) FROM {settings.hotstore.database}.{table}"
        return int(client.command(sql))
    finally:
        client.close()


def _measure(settings: Settings, console: Console, tmp: Path, warmup_s: float, measure_s: float) -> dict[str, Any]:
    from plantstream.simulator.plant_config import load_plant
    from plantstream.streaming.runner import start_cluster, stop_cluster, stop_cluster_gently
    from plantstream.waiting import wait_until

    plant = load_plant(settings.plant_file)
    period_ms = round(plant.sample_period_s * 1000)
    machines = [m.machine_id for m in plant.machines()]
    log_path = tmp / "flow.log"
    members = start_cluster(settings, processes=1, stop_at_end=False, log_path=log_path)
    failed: list[str] = []
    try:
        ctx = multiprocessing.get_context("spawn")
        total_s = warmup_s + measure_s
        started = ctx.Value("d", 0.0)
        counts = ctx.Array("q", int(total_s) + 2)
        lag = ctx.Array("i", int(total_s * 1000 / period_ms) + 1)
        telemetry = ctx.Value("q", 0)
        window = [float("inf"), float("inf")]
        alerts = _AlertLatency(settings, window)
        alerts.start()
        alerts.ready.wait(30)
        shared = _LoadCounters(started, counts, lag, telemetry)
        load = ctx.Process(target=_load, args=(settings, total_s, shared), daemon=True)
        with console.status(f"{MACHINES} machines every {plant.sample_period_s:g} s: warm-up {warmup_s:.0f} s"):
            load.start()
            wait_until(lambda: started.value > 0, 60, "the load generator's start")
            window[:] = [started.value + warmup_s, started.value + total_s]
            sample = machines[:: max(1, len(machines) // TWIN_SAMPLE_MACHINES)][:TWIN_SAMPLE_MACHINES]
            twin = _TwinLatency(settings, sample, window, period_ms)
            twin.start()
            time.sleep(max(0.0, window[0] - time.time()))  # the load runs on its own clock; this waits for it
        with console.status(f"measuring for {measure_s:.0f} s"):
            load.join(measure_s + 120)
            time.sleep(1.5)  # the last steps' rows: the poller and consumer see them before they stop
        twin.stop.set()
        alerts.stop.set()
        twin.join(10)
        alerts.join(10)
        if members[0].poll() is not None:
            failed.append(f"the flow exited with {members[0].returncode}; see {log_path}")
        produced = int(sum(counts[int(warmup_s) : int(total_s)]))
        events_total = int(sum(counts))  # all four streams, warm-up included
        with console.status("waiting until the hot store holds the load's last step"):
            # Not a count: sensor faults (spikes out of range) are dead-lettered, dropouts never sent.
            last_step_ms = round(started.value * 1000) + (int(total_s * 1000 / period_ms) - 1) * period_ms
            try:
                wait_until(
                    lambda: _hot_newest_ms(settings, "telemetry_raw") >= last_step_ms,
                    DRAIN_TIMEOUT_S,
                    "the flow to catch up",
                    poll_s=0.2,
                )
                catch_up_s: float | None = round(time.time() - last_step_ms / 1000, 1)
            except TimeoutError:
                catch_up_s = None  # a figure, not a failed step: the latencies above then say how far behind
        for thread, name in ((alerts, "alert consumer"), (twin, "twin poller")):
            if thread.error is not None:
                failed.append(f"{name}: {thread.error!r}")
    finally:
        stop_cluster_gently(members)
        try:
            members[0].wait(60)
        except Exception:
            stop_cluster(members)
    a50, a99, amax = _percentiles(alerts.samples)
    c50, c99, _ = _percentiles(alerts.concluded)
    t50, t99, tmax = _percentiles(twin.samples)
    lags = np.asarray(list(lag)[int(warmup_s * 1000 / period_ms) : int(total_s * 1000 / period_ms)])
    if not alerts.samples:
        failed.append("no alert was raised in the measurement window")
    figures: dict[str, Any] = {
        "machines": MACHINES,
        "sample_period_s": plant.sample_period_s,
        "partitions": PARTITIONS,
        "flow_processes": 1,
        "broker": "tansu memory:// storage",
        "warmup_s": warmup_s,
        "measure_s": measure_s,
        "load_events_per_s": round(produced / measure_s),
        "events_produced": events_total,
        "telemetry_produced": int(telemetry.value),
        "load_lag_p99_ms": round(float(np.percentile(lags, 99)), 1) if len(lags) else None,
        "alerts_measured": len(alerts.samples),
        "alert_p50_ms": _round(a50),
        "alert_p99_ms": _round(a99),
        "alert_max_ms": _round(amax),
        "alert_concluded_p50_ms": _round(c50),
        "alert_concluded_p99_ms": _round(c99),
        "twin_samples": len(twin.samples),
        "twin_machines_sampled": len(twin.machines),
        "twin_p50_ms": _round(t50),
        "twin_p99_ms": _round(t99),
        "twin_max_ms": _round(tmax),
        "twin_poll_interval_ms": TWIN_POLL_S * 1000,
        "flow_kept_up": catch_up_s is not None,
        "flow_catch_up_s": catch_up_s,
        "alert_p99_goal_ms": ALERT_P99_GOAL_MS,
        "twin_p99_goal_ms": TWIN_P99_GOAL_MS,
        "cpu_cores": os.cpu_count(),
        "failed_steps": failed,
    }
    figures["alert_goal_met"] = a99 is not None and a99 < ALERT_P99_GOAL_MS
    figures["twin_goal_met"] = t99 is not None and t99 < TWIN_P99_GOAL_MS
    return figures


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _print_table(console: Console, f: dict[str, Any]) -> None:
    table = Table(
        title=(
            f"latency, {f['machines']} machines every {f['sample_period_s']:g} s, {f['load_events_per_s']:,} events/s "
            f"sustained for {f['measure_s']:.0f} s, every branch on ({f['broker']})"
        )
    )
    for column in ("from the source timestamp to", "p50 ms", "p99 ms", "max ms", "samples", "goal (p99)"):
        table.add_column(column, justify="right" if column != "from the source timestamp to" else "left")
    table.add_row(
        "alert on Kafka (factory.alerts, received)",
        str(f["alert_p50_ms"]),
        str(f["alert_p99_ms"]),
        str(f["alert_max_ms"]),
        f"{f['alerts_measured']:,}",
        f"< {f['alert_p99_goal_ms']:.0f} ms: {'met' if f['alert_goal_met'] else 'NOT met'}",
    )
    table.add_row(
        "  of which: the alert branch concluded it (read_ts)",
        str(f["alert_concluded_p50_ms"]),
        str(f["alert_concluded_p99_ms"]),
        "",
        "",
        "",
    )
    table.add_row(
        "twin row visible in the hot store (twin_state)",
        str(f["twin_p50_ms"]),
        str(f["twin_p99_ms"]),
        str(f["twin_max_ms"]),
        f"{f['twin_samples']:,}",
        f"< {f['twin_p99_goal_ms']:.0f} ms: {'met' if f['twin_goal_met'] else 'NOT met'}",
    )
    console.print(table)
    console.print(
        f"load generator behind schedule (p99): {f['load_lag_p99_ms']} ms; flow kept up: {f['flow_kept_up']} "
        f"(hot store held the last step {f['flow_catch_up_s']} s after it was due); "
        f"twin polled every {f['twin_poll_interval_ms']:.0f} ms on {f['twin_machines_sampled']} machines "
        "(upper bounds: the poll interval and the query are in the figures)"
    )
