"""Stream benchmark: the telemetry dataflow against a bare consumer and Quix Streams.

One command, one run, on a platform it starts itself (SeaweedFS, Tansu, hot store on
free loopback ports, temporary state; Tansu on ``memory://`` storage so the broker's
own S3 writes do not compete with the flow's sinks for the 2 cores).  It pre-loads one
topic with telemetry (200 machines x 3 signals at 1 Hz, JSON, keyed by machine, 4
partitions) and reads the same messages with:

* a bare confluent-kafka consumer (``consume(10000)``, no decoding), best of 3 reads: the ceiling;
* the PlantStream dataflow, full: decode/validate, DLQ, hot store ``telemetry_raw``,
  bronze Delta, 60 s + 300 s windows to ``telemetry_windows``, Bytewax recovery with
  snapshots (effectively-once on) - one process, then two processes;
* the one-process run again with ``/metrics`` served and scraped every second (metrics
  are always counted; "on" adds serving and scraping): the observability overhead;
* the same windowed aggregation written idiomatically with Quix Streams 3.28
  (``tumbling_window(60 s).collect().final()`` per machine, then the same aggregates per
  signal as the flow: count, min, max, mean, std, p95 and last, a duplicate seq counted
  once; RocksDB state, no sinks), on the whole topic (a prefix with ``--quick``) under a
  time limit.

Every PlantStream run is verified: the hot store (``FINAL``) and bronze hold every
event and the 60 s windows count every event once; a run that is not is an error, so
the figures are honest.  Every job is timed from its first fetch, as the bare consumer
is: PlantStream until its last process has written everything to both sinks and exited,
so its rate includes draining the sinks; its start-up (imports excluded: building the
flow, Bytewax, the consumers' first fetch) is reported on its own.

Run: ``plantstream bench stream [--quick] [--json]``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.benchmarks.telemetry_load import SIGNALS, produce, reading
from plantstream.connect.kafka import consumer as kafka_consumer
from plantstream.connect.kafka import producer as kafka_producer
from plantstream.contract import Codec, Telemetry
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.contract.topics import TELEMETRY, message_key, topic_name
from plantstream.services.isolated import isolated_settings
from plantstream.services.supervisor import CORE_SERVICES, LocalPlatform
from plantstream.settings import Settings

FULL_EVENTS = 1_020_000
QUICK_EVENTS = 201_000
MACHINES = 200
PARTITIONS = 4
QUIX_PREFIX_QUICK = 60_000
# The bare consumer's rate varies by ~20 % from run to run (one read takes ~1 s): the
# ceiling is its best of a few reads, so the ratio against it is the strict one.
BARE_RUNS = 3
QUIX_TIME_LIMIT_S = 60.0
RUN_TIMEOUT_S = 900.0


SCRAPE_INTERVAL_S = 1.0  # harsher than Prometheus' usual 15 s


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:
    """Run the benchmark; returns the figures (also written to benchmarks/results/stream.json)."""
    events = QUICK_EVENTS if quick else FULL_EVENTS
    quix_prefix = QUIX_PREFIX_QUICK if quick else events
    with tempfile.TemporaryDirectory(prefix="plantstream-bench-stream-") as tmp:
        bench = _platform_settings(Path(tmp) / "state")
        platform = LocalPlatform(bench, services=CORE_SERVICES, die_with_parent=True)
        with console.status("starting the local platform (memory-backed Tansu)"):
            platform.up()
        try:
            figures = _measure(bench, console, events, quix_prefix, Path(tmp))
        finally:
            platform.down()
    _print_table(console, figures)
    write_results("stream", figures, quick=quick)
    return figures


def _measure(settings: Settings, console: Console, events: int, quix_prefix: int, tmp: Path) -> dict[str, Any]:
    topic = topic_name(settings, TELEMETRY)
    with console.status(f"producing {events:,} telemetry events"):
        produce_s = _preload(settings, events)
    console.log(f"pre-loaded {events:,} events into {topic} in {produce_s:.1f}s")

    with console.status(f"bare consumer, best of {BARE_RUNS}"):
        _wait_until_platform_idle()
        bare_s = min(_bare_consumer(settings, topic, events) for _ in range(BARE_RUNS))
    console.log(f"bare consumer: {events / bare_s:,.0f} events/s (best of {BARE_RUNS})")

    one, cores_one, startup_one = _plantstream(settings, processes=1, tmp=tmp, events=events)
    console.log(f"PlantStream, 1 process: {events / one:,.0f} events/s (verified), {cores_one:.2f} cores busy")
    watched, scrapes = _plantstream_scraped(settings, tmp=tmp, events=events)
    console.log(
        f"PlantStream, 1 process, /metrics served and scraped every {SCRAPE_INTERVAL_S:g} s: "
        f"{events / watched:,.0f} events/s ({scrapes} scrapes)"
    )
    two, cores_two, startup_two = _plantstream(settings, processes=2, tmp=tmp, events=events)
    console.log(f"PlantStream, 2 processes: {events / two:,.0f} events/s (verified), {cores_two:.2f} cores busy")

    with console.status(f"Quix Streams on the first {quix_prefix:,} events"):
        quix_events, quix_s = _quix(settings, topic, quix_prefix, tmp)
    console.log(f"Quix Streams: {quix_events / quix_s:,.0f} events/s on {quix_events:,} events")

    plantstream = events / one
    figures: dict[str, Any] = {
        "events": events,
        "machines": MACHINES,
        "partitions": PARTITIONS,
        "broker": "tansu memory:// storage",
        "bare_consumer_events_per_s": round(events / bare_s),
        "plantstream_events_per_s": round(plantstream),
        "plantstream_2workers_events_per_s": round(events / two),
        "plantstream_metrics_on_events_per_s": round(events / watched),
        "metrics_scrapes": scrapes,
        "quix_events_per_s": round(quix_events / quix_s),
        "quix_events_measured": quix_events,
        "quix_time_limit_s": QUIX_TIME_LIMIT_S,
        "plantstream_seconds": round(one, 2),
        "plantstream_2workers_seconds": round(two, 2),
        "plantstream_startup_s": round(startup_one, 2),
        "plantstream_2workers_startup_s": round(startup_two, 2),
        "produce_events_per_s": round(events / produce_s),
        "cpu_cores": os.cpu_count(),
        "plantstream_cores_busy": round(cores_one, 2),
        "plantstream_2workers_cores_busy": round(cores_two, 2),
    }
    figures["ratio_plantstream_to_bare"] = round(plantstream / figures["bare_consumer_events_per_s"], 3)
    figures["ratio_plantstream_to_quix"] = round(plantstream / max(1, figures["quix_events_per_s"]), 1)
    figures["ratio_2workers_to_1"] = round(figures["plantstream_2workers_events_per_s"] / plantstream, 2)
    # Metrics are always counted; "on" adds serving /metrics and a scraper reading it.
    figures["ratio_metrics_on_to_off"] = round(figures["plantstream_metrics_on_events_per_s"] / plantstream, 3)
    return figures


# -- platform and data ---------------------------------------------------------------
def _platform_settings(state_dir: Path) -> Settings:
    return isolated_settings(
        state_dir,
        kafka={"local_storage": "memory", "default_partitions": PARTITIONS, "topic_prefix": "bench."},
    )


def _preload(settings: Settings, events: int) -> float:
    """Produce ``events`` telemetry messages (time order, machines interleaved)."""
    from plantstream.streaming.runner import prepare_flow

    prepare_flow(settings)
    codec = Codec(Telemetry)
    topic = topic_name(settings, TELEMETRY)
    base = (int(time.time() * 1000) - 2 * 3_600_000) // 300_000 * 300_000
    keys = [message_key(f"m-{m:03d}") for m in range(MACHINES)]
    seqs = [0] * MACHINES
    producer = kafka_producer(settings)
    start = time.perf_counter()
    sent = 0
    step = 0
    while sent < events:
        ts = base + step * 1000
        for m in range(MACHINES):
            for s in range(len(SIGNALS)):
                if sent == events:
                    break
                event = reading(m, seqs[m], ts, s, (m * 7 + step * 13 + s * 3) % 50 / 10.0)
                seqs[m] += 1
                produce(producer, topic, keys[m], codec.encode(event))
                sent += 1
            producer.poll(0)
        step += 1
    if producer.flush(300) != 0:
        raise RuntimeError("producer did not deliver every event")
    return time.perf_counter() - start


def _bare_consumer(settings: Settings, topic: str, events: int) -> float:
    """Seconds for one assign()-ed consumer to read every message (``consume(10000)``),
    timed from its first fetch (connection set-up excluded: a strict ceiling)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = kafka_consumer(settings, **{"group.id": f"bench-bare-{uuid.uuid4().hex[:8]}"})
    partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    read = 0
    start = 0.0
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while read < events:
        if time.monotonic() > deadline:
            raise TimeoutError(f"bare consumer read {read:,} of {events:,}")
        batch = consumer.consume(10_000, timeout=1.0)
        if batch and not start:
            start = time.perf_counter()  # from the first fetch: the strictest ceiling
        read += sum(1 for m in batch if m.error() is None)
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


# -- PlantStream ------------------------------------------------------------------------
def _child_cpu_s() -> float:
    """CPU seconds used so far by this process's live children (the platform's services)."""
    ticks = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == me:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / ticks


def _wait_until_platform_idle(timeout_s: float = 120.0) -> None:
    """Wait until the platform's services use < 10 % of a core (the hot store merges the
    previous run's parts for a while): every run starts from the same quiet platform."""
    deadline = time.monotonic() + timeout_s
    before = _child_cpu_s()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _child_cpu_s()
        if now - before < 0.05:
            return
        before = now


def _plantstream(settings: Settings, *, processes: int, tmp: Path, events: int) -> tuple[float, float, float]:
    """For a drain run of the full flow with ``processes`` processes (verified): seconds
    from the first fetch to the end, the CPU cores busy meanwhile (the members' and the
    platform services' CPU time over the whole run's wall time, imports included, so
    slightly high) and the start-up seconds before the first fetch."""
    from plantstream.streaming.runner import run_cluster_timed

    name = f"bench_p{processes}_{uuid.uuid4().hex[:6]}"
    run_settings = settings.model_copy(
        update={
            "state_dir": tmp / name,
            "hotstore": settings.hotstore.model_copy(update={"database": name}),
            "lake": settings.lake.model_copy(update={"prefix": f"bench/{name}"}),
        }
    )
    _wait_until_platform_idle()
    services0, members0, wall0 = _child_cpu_s(), os.times(), time.monotonic()
    result = run_cluster_timed(
        run_settings, processes=processes, stop_at_end=True, timeout_s=RUN_TIMEOUT_S, log_path=tmp / f"{name}.log"
    )
    services1, members1, wall1 = _child_cpu_s(), os.times(), time.monotonic()
    members_cpu = members1.children_user + members1.children_system - members0.children_user - members0.children_system
    cores = (members_cpu + services1 - services0) / (wall1 - wall0)
    _verify(run_settings, result.stats.as_dict(), events)
    return result.finished_at - result.first_data_at, cores, result.first_data_at - result.started_at


def _plantstream_scraped(settings: Settings, *, tmp: Path, events: int) -> tuple[float, int]:
    """The 1-process run again with ``/metrics`` served (``metrics.enabled``) and scraped
    every :data:`SCRAPE_INTERVAL_S` while it runs: seconds and the number of scrapes."""
    import urllib.request

    from plantstream.observability.ports import PORT_SPAN, metrics_port
    from plantstream.services.isolated import pick_free_port_block

    watched = settings.model_copy(
        update={
            "metrics": settings.metrics.model_copy(
                update={"enabled": True, "base_port": pick_free_port_block(PORT_SPAN)}
            )
        }
    )
    url = f"http://127.0.0.1:{metrics_port(watched, 'stream', 0)}/metrics"
    stop = threading.Event()
    scrapes = [0]

    def scrape() -> None:
        while not stop.wait(SCRAPE_INTERVAL_S):
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    answer.read()
                scrapes[0] += 1
            except OSError:
                pass  # not serving yet (start-up) or already gone

    scraper = threading.Thread(target=scrape, daemon=True)
    scraper.start()
    try:
        seconds, _cores, _startup = _plantstream(watched, processes=1, tmp=tmp, events=events)
    finally:
        stop.set()
        scraper.join(5)
    return seconds, scrapes[0]


def _verify(settings: Settings, stats: dict[str, int], events: int) -> None:
    from deltalake import DeltaTable

    from plantstream.connect.hotstore import hotstore_client
    from plantstream.connect.s3 import delta_storage_options
    from plantstream.streaming.bronze_sink import bronze_uri

    db = settings.hotstore.database
    client = hotstore_client(settings)
    try:
        raw = int(client.command(f"SELECT count() FROM {db}.telemetry_raw FINAL"))
        windowed = int(
            client.command(f"SELECT sum(`count`) FROM {db}.telemetry_windows FINAL WHERE window_seconds = 60")
        )
    finally:
        client.close()
    bronze = DeltaTable(bronze_uri(settings, TELEMETRY_STREAM), storage_options=delta_storage_options(settings))
    bronze_rows = int(pa.table(bronze.get_add_actions(flatten=True)).column("num_records").to_numpy().sum())
    problems = {
        name: value
        for name, value in {
            "events_in": stats["events_in"],
            "hot_raw_final": raw,
            "bronze_rows": bronze_rows,
            "windowed_events": windowed,
        }.items()
        if value != events
    }
    if problems:
        raise RuntimeError(f"PlantStream run incomplete (expected {events:,} each): {problems}")


# -- Quix Streams -----------------------------------------------------------------------
def _quix(settings: Settings, topic: str, prefix: int, tmp: Path) -> tuple[int, float]:
    """(events processed, seconds) for an idiomatic Quix tumbling-window aggregation of
    the first ``prefix`` events (stops early at :data:`QUIX_TIME_LIMIT_S`)."""
    from quixstreams import Application
    from quixstreams.models import TopicConfig

    app = Application(
        broker_address=settings.kafka.bootstrap_servers,
        consumer_group=f"bench-quix-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        state_dir=str(tmp / "quix-state"),
        use_changelog_topics=False,
        consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "fetch.queue.backoff.ms": 10},
    )
    source = app.topic(
        topic,
        value_deserializer="json",
        timestamp_extractor=lambda value, _headers, _ts, _type: value["source_ts"],
        config=TopicConfig(num_partitions=PARTITIONS, replication_factor=1),
    )
    seen = {"n": 0, "first": 0.0, "last": 0.0}
    lock = threading.Lock()

    def count(_value: dict[str, Any]) -> None:
        with lock:
            if seen["n"] == 0:
                seen["first"] = time.perf_counter()
            seen["n"] += 1
            seen["last"] = time.perf_counter()
            if seen["n"] >= prefix:
                app.stop()

    sdf = app.dataframe(source)
    sdf = sdf.update(count)
    sdf = sdf.tumbling_window(60_000, grace_ms=30_000).collect().final()
    sdf = sdf.apply(_quix_window_aggregates)
    timer = threading.Timer(QUIX_TIME_LIMIT_S + 30.0, app.stop)  # + consumer-group join time
    timer.start()
    try:
        app.run()
    finally:
        timer.cancel()
    elapsed = seen["last"] - seen["first"]
    if seen["n"] == 0 or elapsed <= 0:
        raise RuntimeError("Quix Streams processed no events")
    return int(seen["n"]), elapsed


def _quix_window_aggregates(window: dict[str, Any]) -> dict[str, tuple[float, ...]]:
    """A closed Quix window of one machine -> per signal (count, min, max, mean, std, p95,
    last): the flow's aggregates, written as a Quix user would (a duplicate seq once)."""
    by_signal: dict[str, dict[int, float]] = {}
    for event in window["value"]:
        if event["value"] is not None:
            by_signal.setdefault(event["signal"], {})[event["seq"]] = event["value"]
    out = {}
    for signal, by_seq in by_signal.items():
        values = np.fromiter(by_seq.values(), np.float64, len(by_seq))
        out[signal] = (
            len(values),
            float(values.min()),
            float(values.max()),
            float(values.mean()),
            float(values.std()),
            float(np.percentile(values, 95)),
            by_seq[max(by_seq)],
        )
    return out


def _print_table(console: Console, f: dict[str, Any]) -> None:
    bare = f["bare_consumer_events_per_s"]
    table = Table(title=f"telemetry stream, {f['events']:,} events, {f['partitions']} partitions ({f['broker']})")
    table.add_column("job")
    table.add_column("events/s", justify="right")
    table.add_column("÷ bare consumer", justify="right")
    table.add_column("x Quix", justify="right")
    rows = [
        ("bare confluent-kafka consumer, consume(10000), no decoding, best of 3", bare),
        ("PlantStream full dataflow, 1 process (sinks + effectively-once, verified)", f["plantstream_events_per_s"]),
        (
            "PlantStream full dataflow, 1 process, /metrics served and scraped every second",
            f["plantstream_metrics_on_events_per_s"],
        ),
        ("PlantStream full dataflow, 2 processes (verified)", f["plantstream_2workers_events_per_s"]),
        (
            f"Quix Streams 3.28 tumbling window, same aggregates, {f['quix_events_measured']:,} events, no sinks",
            f["quix_events_per_s"],
        ),
    ]
    for label, rate in rows:
        table.add_row(label, f"{rate:,}", f"{rate / bare:.3f}", f"{rate / max(1, f['quix_events_per_s']):.1f}")
    console.print(table)
    console.print(
        f"2 processes ÷ 1 process: {f['ratio_2workers_to_1']:.2f} "
        f"(cores busy, flow + platform services: {f['plantstream_cores_busy']:.2f} with 1 process, "
        f"{f['plantstream_2workers_cores_busy']:.2f} with 2, of {f['cpu_cores']}); "
        f"PlantStream start-up before its first fetch (not in the rates): {f['plantstream_startup_s']:.2f} s, "
        f"{f['plantstream_2workers_startup_s']:.2f} s with 2; "
        f"Quix capped at {f['quix_time_limit_s']:.0f} s; every job timed from its first fetch"
    )
