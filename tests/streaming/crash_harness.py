"""Kill -9 the telemetry dataflow at random moments while events flow, then check exactness.

Shared by the default-tier crash test (small, 2 kills) and the slow one (1M+ events,
several kills, the cluster resized between restarts).  A producer thread keeps
producing while the flow is killed and restarted; each kill lands after the hot store
grew by a random number of rows (a condition, not a sleep).  Afterwards the hot store
(``FINAL``) and bronze must hold exactly the produced events - no loss, no duplicate
``(machine_id, seq)``, no gap in any machine's sequence - and the window aggregates
must equal a batch recomputation from bronze.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from telemetry_flow_io import CODEC, assert_windows_match_bronze, bronze_table, hot_scalar
from telemetry_samples import telemetry_series
from waiting import wait_for

from plantstream.connect.kafka import producer
from plantstream.contract.topics import TELEMETRY, message_key, topic_name
from plantstream.settings import Settings
from plantstream.streaming.runner import prepare_flow, recovery_dir, run_cluster, start_cluster, stop_cluster
from plantstream.waiting import wait_until


@dataclass
class CrashRun:
    events: int
    kills: int
    machines: int


class PacedProducer(threading.Thread):
    """Produces ``(topic, key, value)`` records at about ``rate`` per second, so that a kill
    or an outage lands while they flow.  :meth:`telemetry` wraps ``(key, value)`` payloads."""

    def __init__(self, settings: Settings, records: list[tuple[str, bytes, bytes]], rate: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.records, self.rate = settings, records, rate
        self.error: BaseException | None = None
        self.done = threading.Event()

    @classmethod
    def telemetry(cls, settings: Settings, payloads: list[tuple[bytes, bytes]], rate: float) -> PacedProducer:
        topic = topic_name(settings, TELEMETRY)
        return cls(settings, [(topic, key, value) for key, value in payloads], rate)

    def run(self) -> None:
        try:
            p = producer(self.settings)
            start = time.monotonic()
            for i, (topic, key, value) in enumerate(self.records):
                while True:
                    try:
                        p.produce(topic, value=value, key=key)
                        break
                    except BufferError:
                        p.poll(0.05)
                if i % 2_000 == 0:
                    p.poll(0)
                    ahead = i / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        self.done.wait(ahead)  # pacing the producer, not waiting for a result
            assert p.flush(120) == 0, "producer did not deliver everything"
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


def _stacks(members: list, log_path: Path) -> str:
    """Ask each live member to print its threads' stacks (SIGUSR1, see the runner), then
    return the end of the log they print to."""
    size = log_path.stat().st_size if log_path.exists() else 0
    live = [m for m in members if m.poll() is None]
    for member in live:
        os.kill(member.pid, signal.SIGUSR1)

    def dumped() -> str:
        text = log_path.read_text(errors="replace")[size:] if log_path.exists() else ""
        return text if text.count("Current thread") + text.count("most recent call first") >= len(live) else ""

    with contextlib.suppress(TimeoutError):  # print whatever arrived
        wait_until(dumped, 5.0, "the members' stack dumps")
    return log_path.read_text(errors="replace")[size:][-12000:] if log_path.exists() else ""


def hot_rows(settings: Settings, table: str) -> int:
    """Rows of a hot table, not deduplicated (0 while the table or the hot store is not there yet)."""
    try:
        return int(hot_scalar(settings, f"SELECT count() FROM {settings.hotstore.database}.{table}"))
    except Exception:
        return 0


def snapshot_committed_this_run(settings: Settings) -> bool:
    """True once the flow's recovery store holds an epoch committed by the current
    execution (a commit past the resume epoch the latest execution started from)."""
    resume, committed = -1, -1
    latest_ex = -1
    for path in sorted(recovery_dir(settings).glob("*.sqlite3")):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            for ex_num, epoch in db.execute("SELECT ex_num, resume_epoch FROM exs"):
                if ex_num > latest_ex:
                    latest_ex, resume = ex_num, epoch
            for (epoch,) in db.execute("SELECT commit_epoch FROM commits"):
                committed = max(committed, epoch)
        finally:
            db.close()
    return latest_ex >= 0 and committed > resume


def kill_when(
    settings: Settings,
    progress: Callable[[], int],
    targets: Sequence[Callable[[], int]],
    *,
    processes: Sequence[int],
    log_path: Path,
    deadline: float,
    after_snapshot: bool = False,
) -> list[int]:
    """One run per target: start the cluster (``processes[i]`` processes, cycled), wait until
    ``progress()`` reaches the run's target (computed once the run started) - and, with
    ``after_snapshot``, until the run committed a snapshot, so the restart resumes from
    state this run wrote (offsets past a bronze commit, open windows to read back) - then
    kill -9 every process.  Returns ``progress()`` after each kill.  A member that dies on
    its own fails."""
    kills: list[int] = []
    for run, target_of in enumerate(targets):
        members = start_cluster(
            settings, processes=processes[run % len(processes)], stop_at_end=False, log_path=log_path
        )
        target = target_of()

        def ready(t: int = target) -> bool:
            return progress() >= t and (not after_snapshot or snapshot_committed_this_run(settings))

        try:
            try:
                wait_for(
                    lambda ms=members: ready() or any(m.poll() is not None for m in ms),
                    max(10.0, deadline - time.monotonic()),
                    f"progress of run {run}",
                )
            except AssertionError as stuck:
                raise AssertionError(f"{stuck}; members' stacks:\n{_stacks(members, log_path)}") from None
            if any(m.poll() is not None for m in members):
                tail = log_path.read_text(errors="replace")[-4000:] if log_path.exists() else ""
                raise AssertionError(f"a member died on its own; end of {log_path}:\n{tail}")
        finally:
            stop_cluster(members)  # SIGKILL to every process group
        kills.append(progress())
    return kills


def crash_and_recover(
    settings: Settings,
    tmp_path: Path,
    *,
    machines: int,
    seconds: int,
    kills: int,
    process_counts: list[int],
    produce_rate: float,
    seed: int,
    timeout_s: float,
) -> CrashRun:
    """Run, kill -9 ``kills`` times at random moments after each run's first snapshot,
    drain; returns what happened.

    ``process_counts[i]`` is the number of processes of the i-th run (cycled): the
    cluster may be resized between restarts.
    """
    prepare_flow(settings)
    events = telemetry_series(machines=machines, seconds=seconds)
    payloads = [(message_key(e.machine_id), CODEC.encode(e)) for e in events]
    del events
    n = len(payloads)
    rng = random.Random(seed)
    log_path = tmp_path / "flow.log"

    def raw_rows() -> int:
        return hot_rows(settings, "telemetry_raw")

    feeder = PacedProducer.telemetry(settings, payloads, produce_rate)
    feeder.start()
    deadline = time.monotonic() + timeout_s
    # A random moment: after the hot store grew by a random share of the events.
    targets = [lambda: raw_rows() + rng.randint(n // (4 * kills), n // (2 * kills)) for _ in range(kills)]
    done_kills = len(
        kill_when(
            settings,
            raw_rows,
            targets,
            processes=process_counts,
            log_path=log_path,
            deadline=deadline,
            after_snapshot=True,
        )
    )
    feeder.join(max(1.0, deadline - time.monotonic()))
    assert feeder.done.is_set() and feeder.error is None, feeder.error
    final_processes = process_counts[kills % len(process_counts)]
    run_cluster(
        settings,
        processes=final_processes,
        stop_at_end=True,
        timeout_s=max(30.0, deadline - time.monotonic()),
        log_path=log_path,
    )
    return CrashRun(n, done_kills, machines)


def assert_exactly_once(settings: Settings, run: CrashRun) -> None:
    """The hot store and bronze hold each produced event once; windows = bronze recomputation."""
    db = settings.hotstore.database
    n = run.events
    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw FINAL") == n
    distinct = hot_scalar(settings, f"SELECT uniqExact(machine_id, seq) FROM {db}.telemetry_raw FINAL")
    assert distinct == n, "duplicate (machine_id, seq) in the hot store"
    gaps = hot_scalar(
        settings,
        f"SELECT countIf(c != mx + 1) FROM (SELECT machine_id, count() AS c, max(seq) AS mx "
        f"FROM {db}.telemetry_raw FINAL GROUP BY machine_id)",
    )
    assert gaps == 0, "a machine's sequence has gaps in the hot store"

    bronze = bronze_table(settings)
    assert bronze.num_rows == n, f"bronze holds {bronze.num_rows} rows, expected {n}"
    keys = pa.table({"m": bronze.column("machine_id"), "s": bronze.column("seq")})
    per_machine = keys.group_by("m").aggregate([("s", "count_distinct"), ("s", "max"), ("s", "count")])
    assert per_machine.num_rows == run.machines
    counts = per_machine.column("s_count").to_numpy()
    assert (per_machine.column("s_count_distinct").to_numpy() == counts).all(), "duplicates in bronze"
    assert (per_machine.column("s_max").to_numpy() + 1 == counts).all(), "gaps in bronze"

    for width in (60, 300):
        assert_windows_match_bronze(settings, bronze, width, rtol=1e-9)
