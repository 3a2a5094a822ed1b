"""Reading and writing the real platform in the streaming integration tests."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from plantstream.connect.hotstore import hotstore_client
from plantstream.connect.kafka import consumer, producer
from plantstream.connect.s3 import delta_storage_options
from plantstream.contract import Codec, Telemetry
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.contract.topics import TELEMETRY, message_key, topic_name
from plantstream.domain.aggregates import WINDOW_AGGREGATE_SCHEMA, epoch_ms, sort_aggregates, window_aggregates
from plantstream.settings import Settings
from plantstream.streaming.bronze_sink import bronze_uri
from plantstream.streaming.runner import prepare_flow

CODEC = Codec(Telemetry)


def produce(settings: Settings, events: list[Telemetry], bad: list[bytes] = (), *, topic: str | None = None) -> None:
    """Produce events (keyed by machine) and bad payloads; wait until all are acknowledged."""
    prepare_flow(settings)
    topic = topic or topic_name(settings, TELEMETRY)
    errors: list[str] = []

    def delivered(err, _msg) -> None:
        if err is not None:
            errors.append(str(err))

    p = producer(settings)
    for event in events:
        p.produce(topic, value=CODEC.encode(event), key=message_key(event.machine_id), on_delivery=delivered)
        p.poll(0)
    for i, payload in enumerate(bad):
        p.produce(topic, value=payload, key=f"bad-{i}".encode(), on_delivery=delivered)
    assert p.flush(60) == 0, "producer did not deliver everything"
    assert not errors, errors


def read_topic(settings: Settings, topic: str, *, timeout_s: float = 30.0) -> list:
    """Every record of ``topic`` (reads each partition to its end via partition EOF)."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    c = consumer(settings, **{"enable.partition.eof": True, "group.id": f"test-read-{topic}"})
    partitions = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records, at_end = [], set()
    deadline = time.monotonic() + timeout_s
    try:
        while len(at_end) < len(partitions):
            assert time.monotonic() < deadline, f"{topic}: not at end after {timeout_s}s ({len(records)} read)"
            for m in c.consume(1000, timeout=0.5):
                if m.error() is None:
                    records.append(m)
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                else:
                    raise AssertionError(m.error())
    finally:
        c.close()
    return records


def hot_scalar(settings: Settings, sql: str):
    client = hotstore_client(settings)
    try:
        return client.command(sql)
    finally:
        client.close()


def hot_arrow(settings: Settings, sql: str) -> pa.Table:
    client = hotstore_client(settings)
    try:
        return client.query_arrow(sql)
    finally:
        client.close()


def bronze_table(settings: Settings) -> pa.Table:
    from deltalake import DeltaTable

    return DeltaTable(
        bronze_uri(settings, TELEMETRY_STREAM), storage_options=delta_storage_options(settings)
    ).to_pyarrow_table()


def assert_windows_match_bronze(settings: Settings, bronze: pa.Table, width: int, *, rtol: float) -> pa.Table:
    """The hot store's ``width``-second windows (``FINAL``) equal a batch recomputation
    from ``bronze`` with the shared :func:`window_aggregates`; returns the recomputation."""
    expected = sort_aggregates(window_aggregates(bronze, width))
    hot = sort_aggregates(
        hot_arrow(
            settings,
            f"SELECT {', '.join(WINDOW_AGGREGATE_SCHEMA.names)} FROM {settings.hotstore.database}.telemetry_windows "
            f"FINAL WHERE window_seconds = {width}",
        )
    )
    assert hot.num_rows == expected.num_rows, f"{width}s: {hot.num_rows} windows, expected {expected.num_rows}"
    for name in ("machine_id", "signal"):
        assert hot.column(name).to_pylist() == expected.column(name).to_pylist()
    for name in ("window_start", "window_end", "last_ts"):
        assert epoch_ms(hot.column(name)).tolist() == epoch_ms(expected.column(name)).tolist()
    assert hot.column("count").to_pylist() == expected.column("count").to_pylist()
    for name in ("min", "max", "mean", "std", "p95", "last"):
        np.testing.assert_allclose(hot.column(name).to_numpy(), expected.column(name).to_numpy(), rtol=rtol)
    return expected
