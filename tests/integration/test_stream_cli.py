"""``plantstream stream --until-drained --json`` as a user runs it: a real subprocess, the
session platform, a private topic; the last stdout line is the run's counts as JSON.

In-process tests call ``run_flow`` and never reach the CLI's JSON step, which is
why that step could crash after every drain unnoticed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from plantstream.connect.kafka import producer
from plantstream.contract import Codec, Telemetry
from plantstream.contract.topics import TELEMETRY, message_key, topic_name
from plantstream.settings import Settings, child_env
from plantstream.streaming.runner import prepare_flow

pytestmark = pytest.mark.integration
CODEC = Codec(Telemetry)


def _events(machines: int, seconds: int) -> list[Telemetry]:
    # Recent event times: the hot tables' TTL drops rows older than hot_retention_days.
    start = (int(time.time() * 1000) - 3_600_000) // 60_000 * 60_000
    return [
        Telemetry(
            site="plant-1",
            area="machining",
            line="line-1",
            machine_id=f"cnc-{m:02d}",
            seq=step,
            source_ts=start + step * 1000,
            read_ts=start + step * 1000 + 3,
            ingest_ts=start + step * 1000 + 7,
            signal="torque",
            value=40.0 + step % 10,
            unit="Nm",
        )
        for step in range(seconds)
        for m in range(machines)
    ]


def _produce(settings: Settings, events: list[Telemetry], bad: list[bytes]) -> None:
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    p = producer(settings)
    topic = topic_name(settings, TELEMETRY)
    for event in events:
        p.produce(topic, value=CODEC.encode(event), key=message_key(event.machine_id), on_delivery=delivered)
        p.poll(0)
    for i, payload in enumerate(bad):
        p.produce(topic, value=payload, key=f"bad-{i}".encode(), on_delivery=delivered)
    assert p.flush(60) == 0, "producer did not deliver everything"
    assert not errors, errors


def test_stream_until_drained_json_ends_with_the_counts(stream_settings: Callable[..., Settings]) -> None:
    settings = stream_settings()
    prepare_flow(settings)
    events = _events(machines=3, seconds=120)
    bad = [b"", b"{not json"]
    _produce(settings, events, bad)

    done = subprocess.run(
        [str(Path(sys.executable).parent / "plantstream"), "stream", "--until-drained", "--json"],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    counts = json.loads(lines[-1])
    assert counts["events_in"] == len(events) + len(bad)
    assert counts["events_valid"] == len(events)
    assert counts["dead_letters"] == len(bad)
    assert counts["raw_rows_written"] == len(events)
    assert counts["bronze_rows_written"] == len(events)
    assert not any(key.startswith("_") for key in counts)
