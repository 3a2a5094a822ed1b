"""The flow rides out a short outage of a sink's service, stops cleanly on a long one and on
Ctrl-C, and is exact after a restart - ``plantstream stream`` run as a user runs it.

Each test has its own platform (it stops services).  A paced producer keeps events
flowing while the flow runs; an outage is a real service stop (``LocalPlatform.down``)
that begins once the flow has written part of the events (a condition, not a sleep) and
ends once the flow has shown it is waiting (its retry warning in the log).  Afterwards
the hot store (``FINAL``) and bronze hold exactly the produced events.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from crash_harness import PacedProducer
from telemetry_flow_io import CODEC, bronze_table, hot_scalar, produce
from telemetry_samples import telemetry_series
from waiting import wait_for

from plantstream.contract.topics import message_key
from plantstream.services.isolated import isolated_settings
from plantstream.services.supervisor import CORE_SERVICES, LocalPlatform
from plantstream.settings import Settings, child_env
from plantstream.streaming.runner import prepare_flow
from plantstream.streaming.stopping import EXIT_SINK_UNAVAILABLE, EXIT_STOPPED

pytestmark = pytest.mark.integration
EVENTS_MACHINES, EVENTS_SECONDS = 8, 600  # 8 machines x 3 signals x 600 s = 14,400 events
# Paced so that events still flow when the outage starts, even when the flow's start-up is
# slow (a busy machine): ~36 s of production.
PRODUCE_RATE = 400


@pytest.fixture
def own_platform(tmp_path: Path) -> Iterator[tuple[Settings, LocalPlatform]]:
    settings = isolated_settings(
        tmp_path / "state",
        stream={
            "snapshot_interval_seconds": 1.0,
            "bronze_flush_seconds": 0.5,
            "consumer_batch_size": 500,  # many small epochs: the outage lands in the middle
            "sink_retry_seconds": 60.0,
        },
    )
    platform = LocalPlatform(settings, services=CORE_SERVICES, die_with_parent=True)
    platform.up()
    try:
        yield settings, platform
    finally:
        platform.down()


def _stream(settings: Settings, log: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "plantstream"), "stream", *args],
        env=child_env(settings),
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        start_new_session=True,
    )


def _hot_rows(settings: Settings) -> int:
    try:
        return int(hot_scalar(settings, f"SELECT count() FROM {settings.hotstore.database}.telemetry_raw"))
    except Exception:
        return 0


def _assert_exact(settings: Settings, expected: int) -> None:
    db = settings.hotstore.database
    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw FINAL") == expected
    bronze = bronze_table(settings)
    assert bronze.num_rows == expected
    keys = set(zip(bronze.column("machine_id").to_pylist(), bronze.column("seq").to_pylist(), strict=True))
    assert len(keys) == expected, "no duplicate (machine_id, seq) in bronze"


def _outage_while_events_flow(
    settings: Settings, platform: LocalPlatform, service: str, log: Path, *, felt_in: Path | None = None
) -> tuple[subprocess.Popen, PacedProducer, int]:
    """Start a paced producer and the flow, then stop ``service`` once the flow wrote rows.

    Returns once the outage was felt: the flow's retry warning, or (``felt_in``) an error
    in that log - S3's outage is felt first by the broker, whose log lives on S3.
    """
    events = telemetry_series(machines=EVENTS_MACHINES, seconds=EVENTS_SECONDS)
    prepare_flow(settings)
    payloads = [(message_key(e.machine_id), CODEC.encode(e)) for e in events]
    producer = PacedProducer.telemetry(settings, payloads, rate=PRODUCE_RATE)
    flow = _stream(settings, log)
    producer.start()
    wait_for(lambda: _hot_rows(settings) > 0 or flow.poll() is not None, 120, "the flow's first rows")
    assert flow.poll() is None, f"the flow ended before the outage: {log.read_text()[-2000:]}"
    assert not producer.done.is_set(), "every event was produced before the flow started: none left for the outage"
    watched = felt_in or log
    before = watched.stat().st_size if watched.exists() else 0
    word = "retry" if felt_in is None else "error"
    platform.down(services=[service])
    wait_for(
        lambda: word in watched.read_text(errors="replace")[before:].lower() or flow.poll() is not None,
        60,
        f"the outage of {service} to be felt",
    )
    return flow, producer, len(events)


def _finish(settings: Settings, flow: subprocess.Popen, producer: PacedProducer, expected: int, log: Path) -> None:
    """Wait until the producer is done and the hot store holds every event, then Ctrl-C."""
    producer.done.wait(120)
    assert producer.error is None, producer.error
    wait_for(
        lambda: _final_rows(settings) == expected or flow.poll() is not None, 180, f"{expected} rows in the hot store"
    )
    assert flow.poll() is None, log.read_text()[-3000:]
    os.killpg(flow.pid, signal.SIGINT)
    flow.communicate(timeout=120)
    text = log.read_text()
    assert flow.returncode == EXIT_STOPPED, text[-3000:]
    assert "panicked" not in text and "Traceback" not in text, text[-3000:]


def _final_rows(settings: Settings) -> int:
    try:
        return int(hot_scalar(settings, f"SELECT count() FROM {settings.hotstore.database}.telemetry_raw FINAL"))
    except Exception:
        return -1


@pytest.mark.slow  # ~55 s with teardown; the lasting-outage test covers the outage path in the default tier
def test_a_short_hot_store_outage_is_ridden_out_and_the_sinks_are_exact(own_platform, tmp_path: Path) -> None:
    settings, platform = own_platform
    log = tmp_path / "flow.log"
    flow, producer, expected = _outage_while_events_flow(settings, platform, "hotstore", log)
    assert flow.poll() is None, f"the flow stopped during a short outage: {log.read_text()[-2000:]}"
    platform.up()
    _finish(settings, flow, producer, expected, log)
    _assert_exact(settings, expected)


@pytest.mark.slow
def test_a_short_s3_outage_is_ridden_out_and_the_sinks_are_exact(own_platform, tmp_path: Path) -> None:
    # S3 holds the lake and the broker's log: the source waits too, then both come back.
    settings, platform = own_platform
    log = tmp_path / "flow.log"
    flow, producer, expected = _outage_while_events_flow(
        settings, platform, "seaweedfs", log, felt_in=Path(platform.log_file("tansu"))
    )
    platform.up()
    _finish(settings, flow, producer, expected, log)
    _assert_exact(settings, expected)


def test_a_lasting_outage_stops_the_flow_with_one_line_and_a_restart_is_exact(own_platform, tmp_path: Path) -> None:
    settings, platform = own_platform
    settings = settings.model_copy(update={"stream": settings.stream.model_copy(update={"sink_retry_seconds": 6.0})})
    log = tmp_path / "flow.log"
    flow, producer, expected = _outage_while_events_flow(settings, platform, "hotstore", log)
    flow.communicate(timeout=120)  # the hot store stays away longer than the budget
    text = log.read_text()
    assert flow.returncode == EXIT_SINK_UNAVAILABLE, text[-3000:]
    reason = [line for line in text.splitlines() if line.startswith("plantstream stream: ")]
    assert len(reason) == 1 and "hot store is unavailable" in reason[0], text[-3000:]
    assert "panicked" not in text and "Traceback" not in text
    platform.up()
    producer.done.wait(120)
    again = _stream(settings, tmp_path / "again.log", "--until-drained", "--json")
    again.communicate(timeout=300)
    assert again.returncode == 0, (tmp_path / "again.log").read_text()[-3000:]
    _assert_exact(settings, expected)


def test_ctrl_c_stops_the_flow_cleanly_and_a_restart_resumes_exactly(own_platform, tmp_path: Path) -> None:
    settings, _platform = own_platform
    events = telemetry_series(machines=EVENTS_MACHINES, seconds=EVENTS_SECONDS)
    produce(settings, events)
    log = tmp_path / "flow.log"
    flow = _stream(settings, log)  # not draining: runs until stopped
    wait_for(lambda: _hot_rows(settings) > 0 or flow.poll() is not None, 120, "the flow's first rows")
    os.killpg(flow.pid, signal.SIGINT)
    flow.communicate(timeout=120)
    text = log.read_text()
    assert flow.returncode == EXIT_STOPPED, text[-3000:]
    assert "panicked" not in text and "Traceback" not in text and "KeyboardInterrupt" not in text
    again = _stream(settings, tmp_path / "again.log", "--until-drained", "--json")
    again.communicate(timeout=300)
    assert again.returncode == 0, (tmp_path / "again.log").read_text()[-3000:]
    _assert_exact(settings, len(events))
