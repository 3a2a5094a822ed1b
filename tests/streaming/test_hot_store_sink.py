"""The hot-store raw sink on the real local hot store: one writer per process serves every
sink partition, one insert carries several Kafka partitions, and replays are harmless."""

from __future__ import annotations

import numpy as np
import pytest
from telemetry_flow_io import hot_scalar
from telemetry_samples import CODEC, telemetry_series

from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.contract.topics import TELEMETRY, topic_name
from plantstream.streaming.hot_store_sink import HotRawSink
from plantstream.streaming.hot_tables import ensure_hot_tables
from plantstream.streaming.kafka_source import RawBatch
from plantstream.streaming.stream_decode import DecodedBatch, StreamDecoder
from plantstream.streaming.worker_routing import partition_key

pytestmark = pytest.mark.integration

PARTITIONS = [0, 1, 2, 3]


def _batches(topic: str, machines: int, seconds: int) -> list[DecodedBatch]:
    """The series split over four Kafka partitions by machine, one batch per partition."""
    decoder = StreamDecoder(TELEMETRY_STREAM, max_event_time_ahead_s=300)
    by_partition: dict[int, list[bytes]] = {p: [] for p in PARTITIONS}
    for event in telemetry_series(machines=machines, seconds=seconds):
        by_partition[int(event.machine_id.rsplit("-", 1)[1]) % len(PARTITIONS)].append(CODEC.encode(event))
    batches = []
    for partition, values in by_partition.items():
        offsets = np.arange(100, 100 + len(values), dtype=np.int64)
        batches.append(decoder(RawBatch(topic, partition, offsets, [None] * len(values), values)))
    return batches


def _write_through_sink(settings, batches: list[DecodedBatch], *, snapshot_partition: int) -> int:
    """Write each batch to its own sink partition; snapshot ONE partition; return how many
    rows were in the hot store right after that snapshot, then close every partition."""
    sink = HotRawSink(settings, TELEMETRY_STREAM, PARTITIONS, stats=None, flow="test")
    parts = {p: sink.build_part("hot_raw", partition_key(p), None) for p in PARTITIONS}
    for batch in batches:
        parts[batch.partition].write_batch([batch])
    parts[snapshot_partition].snapshot()
    db = settings.hotstore.database
    after_one_snapshot = hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw")
    for part in parts.values():
        part.close()
    return after_one_snapshot


def test_one_partitions_snapshot_writes_what_every_partition_of_the_process_was_given(stream_settings) -> None:
    settings = stream_settings()
    ensure_hot_tables(settings)
    batches = _batches(topic_name(settings, TELEMETRY), machines=8, seconds=30)
    total = sum(b.events.num_rows for b in batches)
    assert all(b.events.num_rows for b in batches) and not any(b.dead_letters for b in batches)

    # The shared writer holds the four partitions' rows (fewer than an insert's worth):
    # the snapshot of partition 2 alone must insert all of them, not only its own.
    assert _write_through_sink(settings, batches, snapshot_partition=2) == total


def test_a_replay_of_the_same_batches_adds_no_rows_and_a_differently_cut_one_collapses_in_final(
    stream_settings,
) -> None:
    settings = stream_settings()
    ensure_hot_tables(settings)
    db = settings.hotstore.database
    batches = _batches(topic_name(settings, TELEMETRY), machines=8, seconds=30)
    total = sum(b.events.num_rows for b in batches)
    _write_through_sink(settings, batches, snapshot_partition=0)

    # Same batches, same cut: the multi-partition insert's token is the same, so the
    # server drops the whole insert (not even unmerged duplicates appear).
    _write_through_sink(settings, batches, snapshot_partition=3)
    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw") == total

    # Replayed with partition 1 left out (another cut, another token): the rows go in
    # again and the table key collapses them in FINAL.
    _write_through_sink(settings, [b for b in batches if b.partition != 1], snapshot_partition=0)
    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw") > total
    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw FINAL") == total


def test_a_raw_table_of_an_older_contract_gains_the_new_column_and_keeps_its_rows(stream_settings) -> None:
    """A field added to the contract (``Telemetry.state_seq``) reaches an existing hot table."""
    from plantstream.connect.hotstore import ensure_database, hotstore_client
    from plantstream.streaming.hot_tables import raw_table_ddl

    settings = stream_settings()
    db = settings.hotstore.database
    ensure_database(settings)
    old_ddl = raw_table_ddl(settings, TELEMETRY_STREAM).replace("    `state_seq` Nullable(Int64),\n", "")
    old_ddl = old_ddl.split("COMMENT")[0] + "COMMENT 'plantstream telemetry_raw v2'"
    assert "state_seq" not in old_ddl
    client = hotstore_client(settings)
    try:
        client.command(old_ddl)
        client.command(
            f"INSERT INTO {db}.telemetry_raw (machine_id, seq, signal, value, unit, quality, site, area, line, v,"
            " event_ts, read_ts, ingest_ts, kafka_partition, kafka_offset, copy_rank) VALUES ('m-1', 7, 'torque',"
            " 40.0, 'Nm', 'good', 's', 'a', 'l', 1, now64(3), now64(3), now64(3), 0, 3, 1)"
        )
    finally:
        client.close()

    ensure_hot_tables(settings)
    ensure_hot_tables(settings)  # idempotent: the second call finds the current shape

    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw WHERE seq = 7 AND state_seq IS NULL") == 1
