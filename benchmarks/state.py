"""State benchmark: window state and recovery time stay flat as the plant runs for weeks.

One command, one run, two parts:

* **state machine** - :class:`PartitionWindows` (one Kafka partition's window state) fed
  two weeks of event time (two days with ``--quick``): a pool of 100 machines of which a
  shifting fifth is active each hour (machines join, leave and come back), 3 signals
  every 30 s.  Per day: tracked machines and open windows at its end, the largest
  hourly pickled snapshot and the time to restore it (unpickle +
  ``PartitionWindows(state)``, the Python side of a Bytewax resume, which reads the open
  windows' rows back from the partition's log - held in memory here), median of 5.
* **real flow** - the telemetry flow on a local platform it starts itself (Tansu,
  hot store, SeaweedFS), restarted after each day of event time: one day is produced,
  the flow drains it and stops, and the next run resumes from its recovery snapshots.
  Per restart: seconds from the process's start (after imports) to its first fetch,
  which is when Bytewax has loaded the recovery partitions and the windows are restored,
  and the recovery directory's size.  Every run must read exactly the day it was given
  (so it resumed where the last one stopped), or the benchmark fails.

The figures compare the first day with the last (ratios): flat means ~1.

Run: ``plantstream bench state [--quick] [--json]``.
"""

from __future__ import annotations

import pickle
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.benchmarks.telemetry_load import SIGNALS, produce, reading
from plantstream.connect.kafka import producer as kafka_producer
from plantstream.contract import Codec, Telemetry
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.contract.topics import TELEMETRY, message_key, topic_name
from plantstream.services.isolated import isolated_settings
from plantstream.services.supervisor import CORE_SERVICES, LocalPlatform
from plantstream.settings import Settings
from plantstream.streaming.kafka_source import RawBatch
from plantstream.streaming.stream_decode import StreamDecoder
from plantstream.streaming.windowing import PartitionWindows, WindowConfig

POOL, ACTIVE = 100, 20
PERIOD_S = 30
DAYS_FULL, DAYS_QUICK = 14, 2
FLOW_DAYS_FULL, FLOW_DAYS_QUICK = 6, 2
RESTORE_REPEATS = 5
BATCH = 2_000
RUN_TIMEOUT_S = 600.0
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:
    """Run the benchmark; returns the figures (also written to benchmarks/results/state.json)."""
    days = DAYS_QUICK if quick else DAYS_FULL
    flow_days = FLOW_DAYS_QUICK if quick else FLOW_DAYS_FULL
    with console.status(f"window state over {days} days of event time"):
        state_days = _state_machine(days)
    with tempfile.TemporaryDirectory(prefix="plantstream-bench-state-") as tmp:
        bench = isolated_settings(Path(tmp) / "state", kafka={"local_storage": "memory"})
        platform = LocalPlatform(bench, services=CORE_SERVICES, die_with_parent=True)
        with console.status("starting the local platform"):
            platform.up()
        try:
            restarts = _real_flow(bench, console, flow_days)
        finally:
            platform.down()
    figures = _figures(state_days, restarts)
    _print_tables(console, state_days, restarts, figures)
    write_results("state", figures, quick=quick)
    return figures


# -- the plant's event stream -----------------------------------------------------------
def _hour_of_events(hour: int, seqs: list[int], start_ms: int) -> list[Telemetry]:
    """One hour of readings from the machines active in that hour (time order)."""
    active = [(hour * 7 + i * 5) % POOL for i in range(ACTIVE)]  # shifting, overlapping sets
    events = []
    for step in range(3_600 // PERIOD_S):
        ts = start_ms + hour * HOUR_MS + step * PERIOD_S * 1000
        for m in active:
            for s in range(len(SIGNALS)):
                events.append(reading(m, seqs[m], ts, s, (m + step) % 10 / 10.0))
                seqs[m] += 1
    return events


# -- part 1: the state machine ----------------------------------------------------------
def _state_machine(days: int) -> list[dict[str, Any]]:
    config = WindowConfig(window_seconds=(60, 300), allowed_lateness_ms=30_000, idle_key_expiry_ms=1_800_000)
    windows = PartitionWindows(config)
    decoder = StreamDecoder(TELEMETRY_STREAM, max_event_time_ahead_s=300)
    codec = Codec(Telemetry)
    seqs = [0] * POOL
    offset = 0
    out = []
    start_ms = 1_700_000_000_000 // DAY_MS * DAY_MS
    for day in range(days):
        events_in_day = 0
        largest = b""  # the day's largest hourly snapshot: what a resume would load at worst
        largest_log: list[pa.Table] = []  # what Kafka holds then, for the resume to read back
        log: list[pa.Table] = []
        for hour in range(day * 24, (day + 1) * 24):
            events = _hour_of_events(hour, seqs, start_ms)
            events_in_day += len(events)
            log = log[-len(events) // BATCH - 1 :]  # this hour and the last: more than any window spans
            for i in range(0, len(events), BATCH):
                chunk = events[i : i + BATCH]
                values = [codec.encode(e) for e in chunk]
                offsets = _offsets(offset, len(chunk))
                offset += len(chunk)
                batch = decoder(RawBatch("bench", 0, offsets, [None] * len(chunk), values))
                windows.process(batch)
                log.append(batch.events)
            blob = pickle.dumps(windows.snapshot())
            if len(blob) > len(largest):
                largest, largest_log = blob, list(log)
        restore_s = statistics.median(_restore_seconds(config, largest, largest_log) for _ in range(RESTORE_REPEATS))
        out.append(
            {
                "day": day + 1,
                "events": events_in_day,
                "tracked_machines": len(windows.machines),
                "open_windows": windows.open_window_count,
                "snapshot_bytes": len(largest),
                "restore_ms": round(restore_s * 1000, 2),
            }
        )
    return out


def _offsets(first: int, n: int) -> np.ndarray:
    return np.arange(first, first + n, dtype=np.int64)


def _restore_seconds(config: WindowConfig, blob: bytes, log: list[pa.Table]) -> float:
    """Unpickle + rebuild the open windows from the partition's log (held in memory here)."""
    start = time.perf_counter()
    PartitionWindows(config, pickle.loads(blob), replay=lambda _partition, _first, _last: iter(log))
    return time.perf_counter() - start


# -- part 2: the real flow, restarted every day -----------------------------------------
def _real_flow(settings: Settings, console: Console, days: int) -> list[dict[str, Any]]:
    from plantstream.streaming.runner import prepare_flow, recovery_dir, run_cluster_timed

    prepare_flow(settings)
    codec = Codec(Telemetry)
    producer = kafka_producer(settings)
    topic = topic_name(settings, TELEMETRY)
    seqs = [0] * POOL
    start_ms = (int(time.time() * 1000) - (days + 1) * DAY_MS) // DAY_MS * DAY_MS
    out = []
    for day in range(days):
        produced = 0
        for hour in range(day * 24, (day + 1) * 24):
            for event in _hour_of_events(hour, seqs, start_ms):
                produce(producer, topic, message_key(event.machine_id), codec.encode(event))
                produced += 1
        if producer.flush(120) != 0:
            raise RuntimeError("producer did not deliver every event")
        result = run_cluster_timed(
            settings, processes=1, stop_at_end=True, timeout_s=RUN_TIMEOUT_S, log_path=settings.state_dir / "flow.log"
        )
        if result.stats.events_in != produced:
            raise RuntimeError(f"day {day + 1}: the flow read {result.stats.events_in:,} events, expected {produced:,}")
        recovery_bytes = sum(f.stat().st_size for f in recovery_dir(settings).rglob("*") if f.is_file())
        out.append(
            {
                "day": day + 1,
                "events": produced,
                "start_to_first_fetch_s": round(result.first_data_at - result.started_at, 3),
                "run_s": round(result.finished_at - result.started_at, 2),
                "recovery_dir_bytes": recovery_bytes,
            }
        )
        console.log(
            f"day {day + 1}: {produced:,} events; restart to first fetch "
            f"{out[-1]['start_to_first_fetch_s']:.2f} s; recovery dir {recovery_bytes / 1e6:.1f} MB"
        )
    return out


# -- report -----------------------------------------------------------------------------
def _figures(state_days: list[dict[str, Any]], restarts: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = state_days[0], state_days[-1]
    # The first restart starts from empty recovery state: compare the second with the last.
    resumed = restarts[1:] or restarts
    return {
        "state_days": len(state_days),
        "state_events": sum(d["events"] for d in state_days),
        "snapshot_bytes_first_day": first["snapshot_bytes"],
        "snapshot_bytes_last_day": last["snapshot_bytes"],
        "snapshot_bytes_ratio_last_to_first": round(last["snapshot_bytes"] / first["snapshot_bytes"], 2),
        "restore_ms_first_day": first["restore_ms"],
        "restore_ms_last_day": last["restore_ms"],
        "restore_ratio_last_to_first": round(last["restore_ms"] / max(first["restore_ms"], 1e-3), 2),
        "tracked_machines_max": max(d["tracked_machines"] for d in state_days),
        "open_windows_max": max(d["open_windows"] for d in state_days),
        "flow_restarts": len(restarts),
        "flow_events": sum(r["events"] for r in restarts),
        "restart_to_first_fetch_s_first": resumed[0]["start_to_first_fetch_s"],
        "restart_to_first_fetch_s_last": resumed[-1]["start_to_first_fetch_s"],
        "restart_ratio_last_to_first": round(
            resumed[-1]["start_to_first_fetch_s"] / max(resumed[0]["start_to_first_fetch_s"], 1e-3), 2
        ),
        "recovery_dir_bytes_last": restarts[-1]["recovery_dir_bytes"],
        "state_per_day": state_days,
        "restarts_per_day": restarts,
    }


def _print_tables(
    console: Console, state_days: list[dict[str, Any]], restarts: list[dict[str, Any]], f: dict[str, Any]
) -> None:
    table = Table(title=f"window state of one partition, {f['state_events']:,} events over {len(state_days)} days")
    for column in ("day", "events", "tracked machines", "open windows", "largest snapshot bytes", "restore ms"):
        table.add_column(column, justify="right")
    for d in state_days:
        table.add_row(
            str(d["day"]),
            f"{d['events']:,}",
            str(d["tracked_machines"]),
            str(d["open_windows"]),
            f"{d['snapshot_bytes']:,}",
            f"{d['restore_ms']:.2f}",
        )
    console.print(table)
    flow = Table(title=f"telemetry flow restarted after each day, {f['flow_events']:,} events")
    for column in ("day", "events", "start → first fetch s", "run s", "recovery dir MB"):
        flow.add_column(column, justify="right")
    for r in restarts:
        flow.add_row(
            str(r["day"]),
            f"{r['events']:,}",
            f"{r['start_to_first_fetch_s']:.2f}",
            f"{r['run_s']:.2f}",
            f"{r['recovery_dir_bytes'] / 1e6:.2f}",
        )
    console.print(flow)
    console.print(
        f"last ÷ first: snapshot size {f['snapshot_bytes_ratio_last_to_first']:.2f}, "
        f"restore time {f['restore_ratio_last_to_first']:.2f}, "
        f"restart to first fetch {f['restart_ratio_last_to_first']:.2f} (from the first resumed restart)"
    )
