"""Crash and resume: SIGKILL the flow mid-stream, restart until drained, exact results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow.compute as pc
import pytest
from telemetry_flow_io import bronze_table, hot_scalar, produce
from telemetry_samples import telemetry_series

from plantstream.settings import child_env
from plantstream.streaming.runner import run_telemetry_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.05)


def test_sigkill_mid_stream_then_resume_gives_exact_counts(stream_settings, tmp_path) -> None:
    # Bronze commits every batch and snapshots every 2 s: a kill lands after commits that the
    # last snapshot does not cover, so the replay must be filtered by the Delta app version.
    settings = stream_settings(snapshot_interval_seconds=2.0, bronze_flush_rows=2_000, consumer_batch_size=2_000)
    events = telemetry_series(machines=40, seconds=1_500)  # 180k events
    produce(settings, events)
    db = settings.hotstore.database
    n = len(events)

    def raw_rows() -> int:
        try:
            return int(hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw"))
        except Exception:
            return 0

    log = (tmp_path / "flow.log").open("wb")
    kills = 0
    for _ in range(2):  # kill it twice at different points
        proc = subprocess.Popen(
            [sys.executable, "-m", "plantstream.streaming.runner", "--drain"],
            env=child_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        target = raw_rows() + n // 4
        try:
            _wait_for(lambda t=target, p=proc: raw_rows() >= t or p.poll() is not None, 120, "progress")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait(30)
    assert kills >= 1, "the flow finished before it could be killed: give it more data"
    written_before_resume = raw_rows()
    assert written_before_resume > 0

    stats = run_telemetry_flow(settings, stop_at_end=True)
    assert stats.events_in < n, "resume must start from the snapshot, not the beginning"

    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw FINAL") == n
    bronze = bronze_table(settings)
    assert bronze.num_rows == n
    unique = bronze.group_by(["machine_id", "seq"]).aggregate([]).num_rows
    assert unique == n
    assert pc.count_distinct(bronze.column("kafka_offset")).as_py() <= n
    windows = hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_windows FINAL WHERE window_seconds = 60")
    assert windows == 40 * 3 * (1_500 // 60)
    for width in (60, 300):
        counted = hot_scalar(
            settings, f"SELECT sum(`count`) FROM {db}.telemetry_windows FINAL WHERE window_seconds = {width}"
        )
        assert counted == n, f"{width}s windows hold {counted} events, expected {n} (state lost or doubled)"
