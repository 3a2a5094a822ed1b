"""The load generator (``plantstream simulate kafka``) against the real local broker: every
stream lands, each event exactly once; a run killed with ``kill -9`` half-way is finished
by the next one without duplicates; consecutive runs continue the numbering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from plantstream.connect.kafka import consumer
from plantstream.connect.kafka_scan import scan_keys
from plantstream.contract.streams import STREAMS
from plantstream.contract.topics import TELEMETRY, topic_name
from plantstream.settings import Settings, child_env
from plantstream.simulator.kafka_producer import produce_simulated_plant

pytestmark = pytest.mark.integration


def _keys_in_kafka(settings: Settings) -> dict[str, Counter[tuple[str, int]]]:
    """Every ``(machine, seq)`` each stream's topic holds, with how often it is there."""
    out: dict[str, Counter[tuple[str, int]]] = {}
    cons = consumer(settings, **{"group.id": "load-generator-tests", "enable.partition.eof": True})
    try:
        for spec in STREAMS:
            topic = topic_name(settings, spec.topic)
            parts = sorted(cons.list_topics(topic, timeout=10).topics[topic].partitions)
            starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
            out[spec.name] = Counter((k.machine_id, k.seq) for k in scan_keys(cons, topic, starts, 60) if k is not None)
    finally:
        cons.close()
    return out


def _with_plant(settings: Settings, machines: int, minutes: float) -> Settings:
    simulator = settings.simulator.model_copy(update={"machines": machines, "simulated_minutes": minutes})
    return settings.model_copy(update={"simulator": simulator})


def test_every_stream_lands_once_and_the_next_run_continues(stream_settings: Callable[..., Settings]) -> None:
    settings = _with_plant(stream_settings(), machines=4, minutes=5)
    first = produce_simulated_plant(settings)

    assert set(first.by_stream) == {spec.name for spec in STREAMS}
    assert first.by_stream["telemetry"] > 0 and first.by_stream["energy"] > 0
    assert first.by_stream["quality"] > 0, "five simulated minutes of four machines make parts"
    assert first.resent == 0
    held = _keys_in_kafka(settings)
    assert {name: sum(c.values()) for name, c in held.items()} == first.by_stream
    assert all(n == 1 for c in held.values() for n in c.values())

    time.sleep(2.5)  # the next run covers only the time since the last one (never the future)
    second = produce_simulated_plant(settings)
    assert second.events > 0
    held = _keys_in_kafka(settings)
    for spec in STREAMS:
        counts = held[spec.name]
        assert sum(counts.values()) == first.by_stream[spec.name] + second.by_stream[spec.name]
        assert all(n == 1 for n in counts.values()), f"{spec.name}: a sequence number was used twice"
        for machine in {m for m, _ in counts}:
            seqs = sorted(s for m, s in counts if m == machine)
            assert seqs == list(range(len(seqs))), f"{spec.name}/{machine}: numbering has a hole"


# ~50 s (kills and restarts the generator); the default tier's test_every_stream_lands_once_and_the_next_run_continues
# covers a run that continues where the last one ended.
@pytest.mark.slow
def test_a_run_killed_half_way_is_finished_by_the_next_without_duplicates(
    stream_settings: Callable[..., Settings],
) -> None:
    settings = _with_plant(stream_settings(), machines=20, minutes=30)
    # Paced (~218k events in ~11 s) so that the kill lands mid-send on any machine: unpaced,
    # a fast one hands the whole run to the broker before the first poll sees it.
    simulator = settings.simulator.model_copy(update={"produce_rate": 20_000})
    settings = settings.model_copy(update={"simulator": simulator})
    telemetry = topic_name(settings, TELEMETRY)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "plantstream"), "simulate", "kafka"],
        env=child_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if _some_telemetry(settings, telemetry):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    checkpoint = json.loads((settings.state_dir / "simulator" / "checkpoint.json").read_text())
    assert checkpoint["in_progress_since_ms"] is not None, "the killed run must be marked unfinished"
    partly = sum(sum(c.values()) for c in _keys_in_kafka(settings).values())

    report = produce_simulated_plant(settings)  # finishes the killed run, exactly as planned

    held = _keys_in_kafka(settings)
    assert {name: sum(c.values()) for name, c in held.items()} == report.by_stream
    assert all(n == 1 for c in held.values() for n in c.values()), "the rerun duplicated events"
    assert 0 < partly < report.events, (partly, report.events)
    assert report.machines == 20


def _some_telemetry(settings: Settings, topic: str) -> bool:
    cons = consumer(settings, **{"group.id": "load-generator-probe"})
    try:
        meta = cons.list_topics(topic, timeout=5).topics.get(topic)
        if meta is None or meta.error is not None:
            return False
        return any(cons.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] > 1000 for p in meta.partitions)
    except Exception:
        return False
    finally:
        cons.close()
