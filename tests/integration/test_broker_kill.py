"""``kill -9`` of the local broker while the load generator writes (docs/platform.md: the
restarted broker may have lost writes it acknowledged).

The load generator must either complete with every event of every stream in Kafka
exactly once, or fail loudly (``DeliveryError``) without advancing its checkpoint - and
then the next run finishes the job, again exactly once.  Each test runs its own SeaweedFS
+ Tansu so killing the broker disturbs nobody else.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from plantstream.connect.kafka import consumer
from plantstream.connect.kafka_scan import scan_keys
from plantstream.contract.streams import STREAMS
from plantstream.contract.topics import TELEMETRY, topic_name
from plantstream.services.isolated import isolated_settings
from plantstream.services.supervisor import LocalPlatform
from plantstream.settings import Settings
from plantstream.simulator.checkpoint import SimulatorCheckpoint
from plantstream.simulator.kafka_producer import DeliveryError, ProduceReport, produce_simulated_plant
from plantstream.simulator.run import simulator_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[tuple[Settings, LocalPlatform]]:
    settings = isolated_settings(
        tmp_path / "state",
        # Paced (~146k events in ~10 s) so that the kill lands mid-send on any machine.
        simulator={"machines": 20, "simulated_minutes": 20, "produce_timeout_s": 240, "produce_rate": 15_000},
    )
    platform = LocalPlatform(settings, services=["seaweedfs", "tansu"], die_with_parent=True)
    platform.up()
    try:
        yield settings, platform
    finally:
        platform.down()


def _kill9_broker(platform: LocalPlatform) -> None:
    record = platform.record("tansu")
    assert record is not None, "the broker is not running"
    os.kill(record.pid, signal.SIGKILL)


def _held(settings: Settings) -> dict[str, Counter[tuple[str, int]]]:
    cons = consumer(settings, **{"group.id": "broker-kill-tests", "enable.partition.eof": True})
    try:
        out = {}
        for spec in STREAMS:
            topic = topic_name(settings, spec.topic)
            parts = sorted(cons.list_topics(topic, timeout=10).topics[topic].partitions)
            starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts]
            out[spec.name] = Counter(
                (k.machine_id, k.seq) for k in scan_keys(cons, topic, starts, 120) if k is not None
            )
        return out
    finally:
        cons.close()


def _telemetry_written(settings: Settings) -> int:
    topic = topic_name(settings, TELEMETRY)
    cons = consumer(settings, **{"group.id": "broker-kill-probe"})
    try:
        meta = cons.list_topics(topic, timeout=5).topics.get(topic)
        if meta is None or meta.error is not None:
            return 0
        return sum(cons.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in meta.partitions)
    except Exception:
        return 0
    finally:
        cons.close()


def test_the_broker_killed_during_simulate_kafka_never_claims_what_kafka_lacks(own_broker) -> None:
    settings, platform = own_broker
    outcome: dict[str, object] = {}

    def produce() -> None:
        try:
            outcome["report"] = produce_simulated_plant(settings)
        except DeliveryError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    deadline = time.monotonic() + 120
    while _telemetry_written(settings) < 20_000:  # mid-run: the broker is taking writes
        assert worker.is_alive(), f"the run ended before the broker could be killed: {outcome}"
        assert time.monotonic() < deadline, "no writes reached the broker"
        time.sleep(0.1)
    _kill9_broker(platform)
    time.sleep(3.0)  # the outage itself: the broker stays away for 3 s
    platform.up()
    worker.join(300)
    assert not worker.is_alive(), "the load generator neither finished nor failed within its deadline"

    checkpoint = SimulatorCheckpoint(simulator_dir(settings) / "checkpoint.json")
    if "error" in outcome:  # failed loudly: nothing committed, the next run finishes the job
        assert checkpoint.in_progress_since_ms is not None and checkpoint.clock_ms is None
        report = produce_simulated_plant(settings)
    else:
        report = outcome["report"]
    assert isinstance(report, ProduceReport)
    held = _held(settings)
    assert {name: sum(c.values()) for name, c in held.items()} == report.by_stream, "Kafka must hold the whole run"
    assert all(n == 1 for c in held.values() for n in c.values()), "an event is in Kafka twice"
    assert SimulatorCheckpoint(simulator_dir(settings) / "checkpoint.json").in_progress_since_ms is None
    print(f"\nrun of {report.events:,} events: {report.resent:,} resent after the broker restart")
