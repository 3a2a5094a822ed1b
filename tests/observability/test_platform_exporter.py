"""The platform exporter on the real platform: consumer lag from a real flow's recovery
store against the log end, and the service and disk gauges.

The lag must be exact, not approximately right: the test knows how many messages each
partition holds (delivery reports) and how many the flow drained, and the local broker's
ListOffsets answer - which the exporter must not use - is wrong on exactly such topics.
"""

from __future__ import annotations

import collections
import time

import pytest
from waiting import wait_for

from plantstream.connect.kafka import consumer, producer
from plantstream.contract import Codec, Telemetry
from plantstream.contract.topics import TELEMETRY, message_key, topic_name
from plantstream.observability.exporter import PlatformExporter
from plantstream.observability.log_end import LogEndTracker
from plantstream.services.supervisor import CORE_SERVICES
from plantstream.settings import Settings
from plantstream.streaming.runner import prepare_flow, run_in_process

pytestmark = pytest.mark.integration
CODEC = Codec(Telemetry)


def _produce(settings: Settings, machines: int, per_machine: int, start_seq: int = 0) -> collections.Counter:
    """Valid telemetry, keyed by machine; returns how many messages went to each partition."""
    now_ms = int(time.time() * 1000)
    delivered: collections.Counter = collections.Counter()
    errors: list[str] = []

    def report(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered[msg.partition()] += 1

    p = producer(settings)
    for m in range(machines):
        for i in range(per_machine):
            event = Telemetry(
                site="plant-1", area="a", line="line-1", machine_id=f"lag-{m:02d}", seq=start_seq + i,
                source_ts=now_ms + i, read_ts=now_ms + i, ingest_ts=now_ms + i, signal="torque", value=40.0,
            )  # fmt: skip
            p.produce(topic_name(settings, TELEMETRY), CODEC.encode(event), key=message_key(event.machine_id),
                      on_delivery=report)  # fmt: skip
            p.poll(0)
    assert p.flush(60) == 0 and not errors, errors
    return delivered


def _cycle_until(exporter: PlatformExporter, tracker: LogEndTracker, done, what: str) -> None:
    def one() -> bool:
        exporter.cycle(tracker)
        return done(exporter.results)

    wait_for(one, 60, what)


def test_lag_is_exact_per_partition_and_stays_right_while_the_flow_is_down(stream_settings) -> None:
    settings = stream_settings(snapshot_interval_seconds=0.5)
    topic, flow = topic_name(settings, TELEMETRY), "plant"
    prepare_flow(settings)
    first = _produce(settings, machines=8, per_machine=250)
    assert run_in_process(settings, stop_at_end=True).events_in == sum(first.values())

    exporter = PlatformExporter(settings, interval_s=0.5)
    tracker = LogEndTracker(settings)
    try:
        partitions = tracker.partitions(topic)
        _cycle_until(
            exporter, tracker, lambda r: len([k for k in r.log_end if k[0] == topic]) == len(partitions),
            "a log end for every partition",
        )  # fmt: skip
        r = exporter.results
        for p in partitions:
            assert r.log_end[(topic, p)] == first[p], f"partition {p}: log end is not the number of messages"
            assert r.committed[(flow, topic, p)] == first[p], f"partition {p}: the drained flow's position"
            assert r.lag[(flow, topic, p)] == 0
        assert r.resume_epoch[(flow, topic)] >= 1

        # The flow is down now; the plant goes on.
        more = _produce(settings, machines=8, per_machine=100, start_seq=250)
        _cycle_until(
            exporter, tracker, lambda r: all(r.log_end[(topic, p)] == first[p] + more[p] for p in partitions),
            "the log end to include the new messages",
        )  # fmt: skip
        for p in partitions:
            assert exporter.results.lag[(flow, topic, p)] == more[p], f"partition {p}"
            assert exporter.results.committed[(flow, topic, p)] == first[p]

        # The same numbers through /metrics, as Prometheus reads them.
        sample = exporter.registry.get_sample_value
        for p in partitions:
            labels = {"flow": flow, "topic": topic, "partition": str(p)}
            assert sample("plantstream_stream_committed_lag_messages", labels) == more[p]
            end = sample("plantstream_kafka_log_end_offset", {"topic": topic, "partition": str(p)})
            assert end == first[p] + more[p]

        # ListOffsets (what get_watermark_offsets(cached=False) sends) is not what the exporter reports.
        from confluent_kafka import TopicPartition

        c = consumer(settings, **{"group.id": "obs-list-offsets"})
        try:
            listed = {
                p: c.get_watermark_offsets(TopicPartition(topic, p), cached=False, timeout=10)[1] for p in partitions
            }
        finally:
            c.close()
        print("ListOffsets high watermarks:", listed, "true ends:", {p: first[p] + more[p] for p in partitions})

        # Caught up again: lag back to 0, the position moved.
        assert run_in_process(settings, stop_at_end=True).events_in == sum(more.values())
        _cycle_until(
            exporter, tracker, lambda r: all(r.lag.get((flow, topic, p)) == 0 for p in partitions), "lag back to 0"
        )
        assert all(exporter.results.committed[(flow, topic, p)] == first[p] + more[p] for p in partitions)
    finally:
        tracker.close()


def test_services_and_disk_of_the_state_dir(platform_settings: Settings) -> None:
    exporter = PlatformExporter(platform_settings, interval_s=0.2)
    tracker = LogEndTracker(platform_settings)
    try:
        exporter.cycle(tracker)
    finally:
        tracker.close()
    r = exporter.results
    # Every service with a pid file in the state dir is reported; the core ones run, and all that
    # run are healthy (MLflow too, while a test that uses it has it up).
    assert {name: r.service_up.get(name) for name in CORE_SERVICES} == dict.fromkeys(CORE_SERVICES, 1)
    assert set(r.service_up.values()) == {1}, r.service_up
    assert r.state_bytes["seaweedfs"] > 0 and r.state_bytes["logs"] > 0
    assert 0 < r.fs_avail < r.fs_size
    assert exporter.health()["ok"] is True
