"""Crash and resume: SIGKILL the flow at random moments while events flow, exact results.

The default-tier test kills a 2-process cluster twice; the slow one streams 1M+ events,
kills 6 times and resizes the cluster between restarts (2 → 1 → 2 processes): state
keyed by partition (not by worker) must find its way to whichever worker reads it.
"""

from __future__ import annotations

import pytest
from crash_harness import assert_exactly_once, crash_and_recover

pytestmark = pytest.mark.integration


def test_kill_9_twice_while_events_flow_then_resume_gives_exact_results(stream_settings, tmp_path) -> None:
    # Bronze commits small files and snapshots come every second: kills land after commits
    # that the last snapshot does not cover, so replays must be filtered by the Delta app version.
    settings = stream_settings(snapshot_interval_seconds=1.0, bronze_flush_rows=5_000, consumer_batch_size=2_000)
    run = crash_and_recover(
        settings,
        tmp_path,
        machines=30,
        seconds=1_000,  # 90k events
        kills=2,
        process_counts=[2],
        produce_rate=30_000,
        seed=7,
        timeout_s=150,
    )
    assert run.kills == 2
    assert_exactly_once(settings, run)


@pytest.mark.slow
def test_kill_9_six_times_over_a_million_events_with_resizing_gives_exact_results(stream_settings, tmp_path) -> None:
    settings = stream_settings(snapshot_interval_seconds=2.0, bronze_flush_rows=50_000)
    run = crash_and_recover(
        settings,
        tmp_path,
        machines=200,
        seconds=1_700,  # 1.02M events
        kills=6,
        process_counts=[2, 1, 2],
        produce_rate=60_000,
        seed=2026,
        timeout_s=300,
    )
    assert run.events >= 1_000_000
    assert run.kills == 6
    assert_exactly_once(settings, run)
