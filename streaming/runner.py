"""Run the plant dataflow, in this process or as a cluster of processes, with Bytewax
recovery on: the one way every entry point runs it.

``run_flow(settings, stop_at_end=True)`` drains every input to its end and returns the
counts of the run; ``stop_at_end=False`` runs until stopped.  It runs in this process
when ``stream.workers`` is 1 and as a cluster of that many processes otherwise, so
``plantstream stream``, ``python -m plantstream.streaming.runner`` and the demo agree.
A cluster (:func:`run_cluster`) starts N worker processes (Bytewax 0.21 has no flag that
spawns them: each is ``python -m plantstream.streaming.runner --process-id K --addresses
A0;A1;…``) and sums their counts.  Scale with processes, not threads: the GIL makes two
threads of one process slower than one.  Kafka partitions are spread over the workers
and every stateful key is aligned with the worker that reads its partition
(:mod:`plantstream.streaming.worker_routing`), so no batch crosses processes.

Recovery state lives in ``settings.recovery_dir / <flow> / <topic namespace>``: one
directory of SQLite recovery partitions shared by all processes of the machine (Bytewax
lets each partition be used by one worker).  A run after a crash - with the same or
another number of processes - resumes from the last snapshot.

``python -m plantstream.streaming.runner [--drain] [--processes N]`` does the same from
the command line with settings from the environment and prints the counts as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from bytewax.testing import run_main

from plantstream.connect.s3 import ensure_buckets
from plantstream.connect.topics import ensure_topics
from plantstream.contract.streams import STREAMS
from plantstream.settings import Settings, child_env, load_settings
from plantstream.streaming import sink_registry
from plantstream.streaming.bronze_sink import ensure_bronze_table
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.hot_tables import ensure_hot_tables
from plantstream.streaming.kafka_source import DRAIN_PROGRESS
from plantstream.streaming.logs import configure_logging
from plantstream.streaming.metrics import serve_metrics
from plantstream.streaming.plant_flow import FLOW_NAME, build_plant_flow
from plantstream.streaming.stopping import (
    EXIT_SINK_UNAVAILABLE,
    STOP,
    SinkUnavailableError,
    install_stop_signals,
    retry_within_budget,
    stop_process,
)

log = logging.getLogger(__name__)

# Recovery partitions of a new recovery directory: Bytewax needs at least one per
# worker that should write snapshots itself (a worker without one ships its snapshots
# to another), and a count of partitions cannot change later; 8 = the largest cluster
# the stateful keys are aligned for.
RECOVERY_PARTITIONS = 8
MEMBER_STARTED_AT = "started_at"
MEMBER_FIRST_DATA_AT = "first_data_at"


def prepare_flow(settings: Settings) -> None:
    """Create what the flow writes to and reads from, if missing (idempotent)."""
    ensure_topics(settings)
    ensure_hot_tables(settings)
    ensure_buckets(settings, [settings.lake.bucket])
    for spec in STREAMS:
        ensure_bronze_table(settings, spec)


def _prepare_or_stop(settings: Settings) -> None:
    """:func:`prepare_flow`, waiting out services that are not up yet; past the sink retry
    budget the process stops with one line (a flow started before its services)."""
    try:
        retry_within_budget(
            "preparing topics, hot tables and the lake",
            lambda: prepare_flow(settings),
            budget_s=settings.stream.sink_retry_seconds,
        )
    except SinkUnavailableError as exc:
        stop_process(f"a service the flow needs is unavailable: {exc}", EXIT_SINK_UNAVAILABLE)


def recovery_dir(settings: Settings) -> Path:
    """The flow's Bytewax recovery partitions, one directory per topic namespace.

    Recovery state is keyed by Kafka partition number: the offsets and windows kept for
    one deployment's partition 3 must never be resumed against another topic set's
    partition 3, so the topic prefix names the directory.
    """
    prefix = settings.kafka.topic_prefix or "catalogue"
    return settings.recovery_dir / FLOW_NAME / "".join(c if c.isalnum() or c in "._-" else "_" for c in prefix)


def ensure_recovery_dir(path: Path, partitions: int = RECOVERY_PARTITIONS) -> Path:
    """Initialise Bytewax recovery partitions in ``path`` unless already there."""
    if not path.is_dir() or not any(path.iterdir()):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, partitions)
    return path


def _recovery_config(settings: Settings) -> RecoveryConfig:
    return RecoveryConfig(ensure_recovery_dir(recovery_dir(settings)), backup_interval=timedelta(0))


def _freeze_startup_heap() -> None:
    """Move everything allocated so far (modules, clients, the flow) out of the cyclic
    GC's reach: full collections then scan only what the run itself allocates (a
    ``gc.collect()`` first would cost ~60 ms for little garbage)."""
    gc.freeze()


def run_in_process(settings: Settings, *, stop_at_end: bool) -> FlowStats:
    """Run the flow in this process (one worker) with recovery on.

    Returns this run's counts (after a resume, replayed events are counted again; the
    sinks deduplicate what they write).
    """
    _prepare_or_stop(settings)
    if settings.metrics.enabled:
        serve_metrics(settings)
    _listen_for_stop()
    stats = FlowStats()
    sink_registry.clear()
    flow = build_plant_flow(settings, stop_at_end=stop_at_end, stats=stats)
    interval = timedelta(seconds=settings.stream.snapshot_interval_seconds)
    log.info("plant flow starting", extra={"event": "flow_start", "processes": 1, "drain": stop_at_end})
    _freeze_startup_heap()
    try:
        run_main(flow, epoch_interval=interval, recovery_config=_recovery_config(settings))
    finally:
        gc.unfreeze()  # this process may go on (tests, the demo): collect as usual again
        # Drop the run's sink partitions: their Kafka producers would otherwise live on
        # and keep reconnecting (and logging) after the platform stops.
        sink_registry.clear()
        gc.collect()
    log.info("plant flow finished", extra={"event": "flow_end", **stats.as_dict()})
    return stats


def _listen_for_stop() -> None:
    """Ctrl-C / SIGTERM end the input and let the last epoch finish (streaming.stopping)."""
    STOP.clear()
    if threading.current_thread() is threading.main_thread():
        install_stop_signals()


def stopped_by_request() -> bool:
    """True if the last run ended because a stop was requested, not at the input's end."""
    return STOP.is_set()


def run_flow(settings: Settings, *, stop_at_end: bool, processes: int | None = None) -> FlowStats:
    """Run the flow as ``processes`` (default ``stream.workers``) processes: in this one
    when 1, else as a cluster.  Every entry point calls this."""
    processes = processes or settings.stream.workers
    if processes > 1:
        return run_cluster(settings, processes=processes, stop_at_end=stop_at_end)
    return run_in_process(settings, stop_at_end=stop_at_end)


def run_cluster_member(settings: Settings, *, process_id: int, addresses: list[str], stop_at_end: bool) -> FlowStats:
    """Run this process as member ``process_id`` of a cluster at ``addresses`` (one
    worker per process).  The topics, tables and bucket must exist already."""
    if settings.metrics.enabled:
        serve_metrics(settings, process_id)
    _listen_for_stop()
    stats = FlowStats()
    sink_registry.clear()
    flow = build_plant_flow(settings, stop_at_end=stop_at_end, stats=stats)
    interval = timedelta(seconds=settings.stream.snapshot_interval_seconds)
    log.info(
        "plant flow member starting",
        extra={"event": "flow_start", "process_id": process_id, "processes": len(addresses), "drain": stop_at_end},
    )
    _freeze_startup_heap()
    try:
        cli_main(
            flow,
            workers_per_process=1,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=interval,
            recovery_config=_recovery_config(settings),
        )
    except BaseException as exc:
        if not (stop_at_end and _is_shutdown_race(exc) and DRAIN_PROGRESS.complete):
            raise
        # Bytewax 0.21's cluster networking (timely) can panic while tearing down after
        # a completed dataflow: a peer closed its sockets while this process still sent
        # its last progress messages.  Every partition of this process reached its end
        # and every valid event was written, so the run is complete.
        log.warning(
            "ignored a cluster shutdown race after the drain completed",
            extra={"event": "shutdown_race", "process_id": process_id, "error": str(exc)},
        )
    if stop_at_end and not STOP.is_set():
        sink_registry.flush_all()
        _check_drained(stats)
    log.info("plant flow member finished", extra={"event": "flow_end", "process_id": process_id, **stats.as_dict()})
    return stats


def _is_shutdown_race(exc: BaseException) -> bool:
    return "Send thread panic" in str(exc) or "Recv thread panic" in str(exc)


def _check_drained(stats: FlowStats) -> None:
    """Raise unless this member's drain is complete: every source partition it built hit
    its end, and every sink received and wrote everything upstream produced for it."""
    problems = {"sources not at end": not DRAIN_PROGRESS.complete}
    for stream in stats.streams:
        c = stats.stream(stream)
        problems[f"{stream}: hot rows != valid events"] = c["raw_rows_written"] != c["events_valid"]
        problems[f"{stream}: bronze rows received != valid events"] = c["bronze_rows_received"] != c["events_valid"]
        problems[f"{stream}: dead letters != invalid events"] = c["dead_letters"] != c["events_in"] - c["events_valid"]
    problems["window rows written != emitted"] = stats.windows_written != stats.windows_emitted
    failed = [name for name, bad in problems.items() if bad]
    if failed:
        raise RuntimeError(f"drain incomplete: {', '.join(failed)} ({stats.as_dict()})")


def free_local_addresses(count: int) -> list[str]:
    """``count`` loopback ``host:port`` addresses free right now (for the cluster's links)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_cluster(
    settings: Settings, *, processes: int, stop_at_end: bool, log_path: Path | None = None
) -> list[subprocess.Popen[bytes]]:
    """Start the ``processes`` members of a cluster (each in its own process group, so a
    caller can ``kill -9`` one or all).  Their last stdout line is their counts as JSON."""
    _prepare_or_stop(settings)
    ensure_recovery_dir(recovery_dir(settings))
    addresses = ";".join(free_local_addresses(processes))
    stderr = log_path.open("ab") if log_path is not None else None
    members = []
    try:
        for process_id in range(processes):
            args = [sys.executable, "-m", "plantstream.streaming.runner", "--process-id", str(process_id)]
            args += ["--addresses", addresses] + (["--drain"] if stop_at_end else [])
            members.append(
                subprocess.Popen(
                    args, env=child_env(settings), stdout=subprocess.PIPE, stderr=stderr, start_new_session=True
                )
            )
    finally:
        if stderr is not None:
            stderr.close()
    return members


def stop_cluster(members: list[subprocess.Popen[bytes]], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to every member's process group and reap them."""
    for member in members:
        if member.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(member.pid, sig)
    for member in members:
        member.wait(60)


def stop_cluster_gently(members: list[subprocess.Popen[bytes]]) -> None:
    """Ask every member to finish its epoch and stop (SIGTERM); :func:`run_cluster_timed` waits."""
    for member in members:
        if member.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(member.pid, signal.SIGTERM)


@dataclass(frozen=True)
class ClusterRun:
    """Summed counts of a cluster run, and when its members started running the flow
    (after their imports), when the first of them received its first message and when
    the last one finished (epoch seconds)."""

    stats: FlowStats
    started_at: float
    first_data_at: float
    finished_at: float


def run_cluster(
    settings: Settings,
    *,
    processes: int,
    stop_at_end: bool,
    timeout_s: float | None = None,
    log_path: Path | None = None,
) -> FlowStats:
    """Run the flow as ``processes`` cooperating processes and return their summed counts.

    Drain mode returns once every member finished; a member that fails makes the whole
    cluster stop (the others would wait for it forever) and raises.
    """
    return run_cluster_timed(
        settings, processes=processes, stop_at_end=stop_at_end, timeout_s=timeout_s, log_path=log_path
    ).stats


def run_cluster_timed(
    settings: Settings,
    *,
    processes: int,
    stop_at_end: bool,
    timeout_s: float | None = None,
    log_path: Path | None = None,
) -> ClusterRun:
    """:func:`run_cluster`, also returning when the members started and ended.

    A stop request to this process (Ctrl-C, SIGTERM) is passed on to every member as
    SIGTERM: each finishes its epoch and exits, and their counts are summed as usual.
    """
    _listen_for_stop()
    members = start_cluster(settings, processes=processes, stop_at_end=stop_at_end, log_path=log_path)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    passed_on = False
    try:
        while any(m.poll() is None for m in members):
            if STOP.is_set() and not passed_on:
                stop_cluster_gently(members)
                passed_on = True
            failed = [m for m in members if m.returncode not in (None, 0)]
            if failed:
                raise RuntimeError(f"cluster member exited with {failed[0].returncode}; see {log_path or 'stderr'}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"cluster did not finish in {timeout_s}s")
            time.sleep(0.02)
        finished_at = time.time()
        failed = [m for m in members if m.returncode != 0]
        if failed:
            raise RuntimeError(f"cluster member exited with {failed[0].returncode}; see {log_path or 'stderr'}")
    finally:
        stop_cluster(members)
    total = FlowStats()
    started, first_data = [], []
    for member in members:
        assert member.stdout is not None
        lines = member.stdout.read().decode().strip().splitlines()
        counts = json.loads(lines[-1])
        started.append(counts.pop(MEMBER_STARTED_AT))
        first_data.append(counts.pop(MEMBER_FIRST_DATA_AT) or finished_at)
        total.merge(counts)
    return ClusterRun(total, min(started), min(first_data), finished_at)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m plantstream.streaming.runner", description=__doc__)
    parser.add_argument("--drain", action="store_true", help="stop once every partition reached its end")
    parser.add_argument("--processes", type=int, default=None, help="start a cluster of N processes")
    parser.add_argument("--process-id", type=int, default=None, help="run as member K of a cluster (internal)")
    parser.add_argument("--addresses", default=None, help="the cluster's host:port list, ';'-separated (internal)")
    args = parser.parse_args(argv)
    configure_logging()
    # ``kill -USR1 <pid>`` prints every thread's Python stack to stderr: how to see where
    # a member that stopped making progress is waiting (no debugger needed).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    settings = load_settings()
    if args.process_id is not None:
        addresses = args.addresses.split(";") if args.addresses else []
        started_at = time.time()
        stats = run_cluster_member(settings, process_id=args.process_id, addresses=addresses, stop_at_end=args.drain)
        timing = {MEMBER_STARTED_AT: started_at, MEMBER_FIRST_DATA_AT: DRAIN_PROGRESS.first_data_at}
        print(json.dumps({**stats.as_dict(), **timing}), flush=True)
        logging.shutdown()
        # Exit now: Bytewax's communication threads may still be unwinding after a
        # shutdown race, and interpreter finalisation would then abort the process.
        os._exit(0)
    else:
        stats = run_flow(settings, stop_at_end=args.drain, processes=args.processes)
    print(json.dumps(stats.as_dict()), flush=True)


if __name__ == "__main__":
    main()
