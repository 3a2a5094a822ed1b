"""End to end through ``kill -9`` of the local broker, three times, while the edge gateway
forwards the live plant and the dataflow reads: every event the gateway sequenced, of
every stream, is in silver exactly once (docs/platform.md, "A kill -9 of the broker can
lose acknowledged writes": the gateway's read-back after every reconnect heals it).

Private SeaweedFS + Tansu + hot store for this module: its broker is the one killed.  The
test prints what the broker itself lost of what it acknowledged (the gateway's
``lost_after_ack``: sent, acknowledged, then missing on read-back and resent).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plantstream.cli.demo_job import materialize_lakehouse, measure_counts
from plantstream.cli.live_plant import run_live_plant
from plantstream.contract.streams import STREAMS
from plantstream.edge.gaps import gap_report
from plantstream.edge.gateway import BUFFER_FILE, edge_dir
from plantstream.services.isolated import isolated_settings
from plantstream.services.process import set_parent_death_signal
from plantstream.services.supervisor import CORE_SERVICES, LocalPlatform
from plantstream.settings import Settings, child_env
from plantstream.streaming.runner import prepare_flow, run_flow

pytestmark = [pytest.mark.integration, pytest.mark.slow]
KILL_AT_S = (12, 27, 42)
OUTAGE_S = 3.0
RUN_S = 55


@pytest.fixture
def own_platform(tmp_path: Path) -> Iterator[tuple[Settings, LocalPlatform]]:
    settings = isolated_settings(tmp_path / "state", edge={"backoff_min_s": 0.2, "backoff_max_s": 2.0})
    platform = LocalPlatform(settings, services=CORE_SERVICES, die_with_parent=True)
    platform.up()
    try:
        yield settings, platform
    finally:
        platform.down()


def test_broker_kill9_three_times_loses_nothing_on_the_way_to_silver(own_platform, tmp_path: Path) -> None:
    settings, platform = own_platform
    prepare_flow(settings)
    stream = subprocess.Popen(
        [str(Path(sys.executable).parent / "plantstream"), "stream"],
        env=child_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "stream.log").open("w"),
        start_new_session=True,
        preexec_fn=set_parent_death_signal,  # noqa: PLW1509 - a killed pytest leaves no flow behind
    )
    pending = list(KILL_AT_S)

    def kill_on_schedule(elapsed: int, _total: int) -> None:
        if pending and elapsed >= pending[0]:
            pending.pop(0)
            record = platform.record("tansu")
            assert record is not None
            os.kill(record.pid, signal.SIGKILL)
            time.sleep(OUTAGE_S)  # the broker stays away this long while the plant runs on
            platform.up()

    try:
        run = run_live_plant(settings, seconds=RUN_S, on_progress=kill_on_schedule)
        assert not pending, "every kill happened"
    finally:
        stream.send_signal(signal.SIGTERM)  # a clean stop (exit 130) ...
        code = stream.wait(120)
    assert code in (0, 130), (tmp_path / "stream.log").read_text()[-3000:]
    run_flow(settings, stop_at_end=True)  # ... then drain what is left
    materialize_lakehouse(settings)

    report = gap_report(settings, buffer_path=edge_dir(settings) / BUFFER_FILE, against="silver")
    assert report.missing == 0, report.as_dict()
    assert report.pending == 0, report.as_dict()
    counts = measure_counts(settings)
    for spec in STREAMS:
        produced = run.produced.events[spec.name]
        assert produced > 0, spec.name
        assert counts[spec.name].silver_rows == produced, f"{spec.name}: silver {counts[spec.name]}, sent {produced}"
    print(
        f"\nproduced {run.produced.events}; the broker lost {run.produced.acked_then_lost} acknowledged events "
        f"(read back and resent by the gateway); gaps against silver: {report.missing}"
    )
