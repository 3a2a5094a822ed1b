"""The bronze table exists before any flow member commits, whoever creates it first.

Two members whose first commits both created the table raced for Delta version 0; the
loser failed ("Metadata changed since last commit") and Bytewax aborted the process.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from deltalake import DeltaTable

from plantstream.connect.s3 import delta_storage_options, ensure_buckets
from plantstream.contract.columns import BRONZE_PARTITION_COLUMNS, bronze_schema
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.settings import Settings
from plantstream.streaming.bronze_sink import bronze_uri, ensure_bronze_table

pytestmark = pytest.mark.integration


def _ensure(settings: Settings, start: Any) -> None:
    start.wait(60)
    ensure_bronze_table(settings, TELEMETRY_STREAM)


def test_processes_racing_to_create_the_bronze_table_all_succeed(stream_settings) -> None:
    settings = stream_settings()
    ensure_buckets(settings, [settings.lake.bucket])
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    racers = [ctx.Process(target=_ensure, args=(settings, start)) for _ in range(4)]
    for racer in racers:
        racer.start()
    start.set()  # released together, after their imports
    for racer in racers:
        racer.join(120)
    assert [r.exitcode for r in racers] == [0, 0, 0, 0]

    def table() -> DeltaTable:
        return DeltaTable(bronze_uri(settings, TELEMETRY_STREAM), storage_options=delta_storage_options(settings))

    # Racers may each commit the (identical) metadata; what matters is that none failed
    # and the table is the contract's.
    assert table().metadata().partition_columns == list(BRONZE_PARTITION_COLUMNS)
    assert table().schema().to_arrow().names == bronze_schema(TELEMETRY_STREAM).names
    version = table().version()
    ensure_bronze_table(settings, TELEMETRY_STREAM)  # on an existing table: nothing committed
    assert table().version() == version


def test_a_resume_reads_back_from_kafka_what_the_table_lacks_of_the_snapshot_and_nothing_twice(stream_settings) -> None:
    """The bronze snapshot does not wait for its commit: it names the last offset handed to
    the sink, and a resume fetches what the table lacks of it from Kafka (decoded: a
    malformed record among them stays out)."""
    from telemetry_flow_io import bronze_table, produce, read_topic
    from telemetry_samples import telemetry_series

    from plantstream.contract.topics import TELEMETRY, topic_name
    from plantstream.streaming.bronze_sink import BronzeSink
    from plantstream.streaming.kafka_source import topic_partitions
    from plantstream.streaming.worker_routing import partition_key

    settings = stream_settings()
    events = telemetry_series(machines=1, seconds=300)  # one machine: one partition
    produce(settings, events)
    _produce_malformed(settings, events[0].machine_id)  # in the same partition, after them
    topic = topic_name(settings, TELEMETRY)
    records = [m for m in read_topic(settings, topic) if m.key() == events[0].machine_id.encode()]
    partition = records[0].partition()
    last = max(m.offset() for m in records)
    assert len(records) == len(events) + 1
    partitions = topic_partitions(settings, topic)
    ensure_bronze_table(settings, TELEMETRY_STREAM)

    def resume(state: int) -> None:
        sink = BronzeSink(settings, TELEMETRY_STREAM, topic, partitions, stats=None, flow="test")
        part = sink.build_part("bronze", partition_key(partition), state)
        part.close()  # commits what it read back

    # A crash after a snapshot that named offset 499, before any commit: 0..499 come back.
    resume(499)
    assert sorted(bronze_table(settings).column("kafka_offset").to_pylist()) == list(range(500))
    # The next snapshot named the last offset; the table holds 0..499: only the rest is read.
    resume(last)
    resume(last)  # and a snapshot that the table already covers reads nothing
    offsets = bronze_table(settings).column("kafka_offset").to_pylist()
    assert len(offsets) == len(set(offsets)) == len(events)  # each valid record once, the malformed one not
    assert set(offsets) == {m.offset() for m in records} - {last}


def _produce_malformed(settings: Settings, machine_id: str) -> None:
    from plantstream.connect.kafka import producer
    from plantstream.contract.topics import TELEMETRY, message_key, topic_name

    p = producer(settings)
    p.produce(topic_name(settings, TELEMETRY), value=b"{not json", key=message_key(machine_id))
    assert p.flush(30) == 0


def test_a_bronze_table_of_an_older_contract_gains_the_new_column_before_the_stream_writes(stream_settings) -> None:
    """A table made before ``Telemetry.state_seq`` existed: the flow's start adds the column
    (old rows read it as null) instead of every commit failing on the schema."""
    import pyarrow as pa
    from deltalake import write_deltalake

    settings = stream_settings()
    ensure_buckets(settings, [settings.lake.bucket])
    uri, storage = bronze_uri(settings, TELEMETRY_STREAM), delta_storage_options(settings)
    full = bronze_schema(TELEMETRY_STREAM)
    old = pa.schema([f for f in full if f.name != "state_seq"])
    DeltaTable.create(uri, old, partition_by=list(BRONZE_PARTITION_COLUMNS), storage_options=storage)

    ensure_bronze_table(settings, TELEMETRY_STREAM)

    assert "state_seq" in DeltaTable(uri, storage_options=storage).schema().to_arrow().names
    row = {f.name: pa.nulls(1, f.type) for f in full}
    row.update(
        machine_id=pa.array(["m-1"]), site=pa.array(["s"]), area=pa.array(["a"]), line=pa.array(["l"]),
        seq=pa.array([1]), signal=pa.array(["torque"]), unit=pa.array(["Nm"]), quality=pa.array(["good"]),
        v=pa.array([1], pa.int16()), read_ts=pa.array([1]), ingest_ts=pa.array([1]), state_seq=pa.array([4]),
        kafka_partition=pa.array([0], pa.int32()), kafka_offset=pa.array([0]),
        event_ts=pa.array([1]).cast(full.field("event_ts").type),
        event_date=pa.array([0], pa.int32()).cast(pa.date32()),
    )  # fmt: skip
    write_deltalake(uri, pa.table(row, schema=full), mode="append", storage_options=storage)
    assert DeltaTable(uri, storage_options=storage).to_pyarrow_table(columns=["state_seq"]).column(0).to_pylist() == [4]
