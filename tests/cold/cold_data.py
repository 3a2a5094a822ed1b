"""Bronze and hot-store rows as the stream writes them, without running Kafka and Bytewax.

Events are encoded with the contract's codec and decoded by the stream's own
:class:`StreamDecoder` (so bronze rows have exactly the stream's columns, partition and
offsets), then written the way the stream's sinks write them: bronze in many small
appends (one per "snapshot"), the hot store through the sink's ``raw_rows``.  The one
test that must not trust this shortcut (hot-store loss) runs the real dataflow.
"""

from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

from plantstream.connect.hotstore import hotstore_client
from plantstream.connect.s3 import delta_storage_options
from plantstream.contract import Codec, EnergyUsage, Telemetry
from plantstream.contract.columns import BRONZE_PARTITION_COLUMNS
from plantstream.contract.streams import ENERGY_STREAM, TELEMETRY_STREAM, StreamSpec
from plantstream.settings import Settings
from plantstream.streaming.bronze_sink import bronze_uri
from plantstream.streaming.hot_store_sink import raw_rows
from plantstream.streaming.kafka_source import RawBatch
from plantstream.streaming.stream_decode import StreamDecoder

PARTITIONS = 4
#: Signals and a value in their valid range (the decoder dead-letters impossible values).
SIGNALS = {"torque": 40.0, "vibration": 3.0, "air_temperature": 295.0}


def day_start_ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def telemetry(machines: int, days: list[dt.date], per_day: int) -> list[Telemetry]:
    """``per_day`` readings per machine and day (signals in turn), seq +1 per machine."""
    seqs = [0] * machines
    out = []
    for day in days:
        start = day_start_ms(day)
        step = 86_400_000 // per_day
        for i in range(per_day):
            for m in range(machines):
                ts = start + i * step + m
                signal = list(SIGNALS)[i % len(SIGNALS)]
                out.append(
                    Telemetry(
                        site="plant-1",
                        area="machining",
                        line=f"line-{m % 2 + 1}",
                        machine_id=f"cnc-{m:02d}",
                        seq=seqs[m],
                        source_ts=ts,
                        read_ts=ts + 3,
                        ingest_ts=ts + 7,
                        signal=signal,
                        value=SIGNALS[signal] + (m * 7 + i * 13) % 50 / 10.0,
                    )
                )
                seqs[m] += 1
    return out


def energy(machines: int, days: list[dt.date], per_day: int) -> list[EnergyUsage]:
    seqs = [0] * machines
    out = []
    for day in days:
        start = day_start_ms(day)
        for i in range(per_day):
            for m in range(machines):
                ts = start + i * (86_400_000 // per_day) + m
                out.append(
                    EnergyUsage(
                        site="plant-1",
                        area="machining",
                        line=f"line-{m % 2 + 1}",
                        machine_id=f"cnc-{m:02d}",
                        seq=seqs[m],
                        source_ts=ts,
                        read_ts=ts + 3,
                        ingest_ts=ts + 7,
                        power_kw=5.0 + m,
                        energy_kwh=float(seqs[m]),
                    )
                )
                seqs[m] += 1
    return out


def decode(spec: StreamSpec, events: list, *, first_offset: int = 0) -> pa.Table:
    """Bronze rows of ``events``: keyed to Kafka partitions by machine, offsets in order."""
    codec = Codec(spec.payload)
    by_partition: dict[int, list] = {}
    for event in events:
        by_partition.setdefault(zlib.crc32(event.machine_id.encode()) % PARTITIONS, []).append(event)
    decoder = StreamDecoder(spec, max_event_time_ahead_s=300)
    tables = []
    for partition, items in sorted(by_partition.items()):
        raw = RawBatch(
            topic=spec.topic.name,
            partition=partition,
            offsets=np.arange(first_offset, first_offset + len(items), dtype=np.int64),
            keys=[e.machine_id.encode() for e in items],
            values=[codec.encode(e) for e in items],
        )
        decoded = decoder.decode(raw)
        assert not decoded.dead_letters, decoded.dead_letters[:3]
        tables.append(decoded.events)
    return pa.concat_tables(tables)


def write_bronze(settings: Settings, spec: StreamSpec, rows: pa.Table, *, commits: int) -> None:
    """Append ``rows`` to ``bronze/<stream>`` in ``commits`` small commits, as the stream does
    (in event-time order: each commit holds what arrived during one snapshot interval)."""
    storage = delta_storage_options(settings)
    rows = rows.sort_by([("event_ts", "ascending"), ("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
    for chunk in np.array_split(np.arange(rows.num_rows), commits):
        if len(chunk):
            write_deltalake(
                bronze_uri(settings, spec),
                rows.take(pa.array(chunk)),
                mode="append",
                partition_by=list(BRONZE_PARTITION_COLUMNS),
                storage_options=storage,
            )


def write_hot(settings: Settings, spec: StreamSpec, rows: pa.Table) -> None:
    client = hotstore_client(settings)
    try:
        client.insert_arrow(spec.hot_table, raw_rows(spec, rows))
    finally:
        client.close()


def hot_query(settings: Settings, sql: str) -> list[tuple]:
    client = hotstore_client(settings)
    try:
        return [tuple(r) for r in client.query(sql).result_rows]
    finally:
        client.close()


STREAM_EVENTS = {TELEMETRY_STREAM.name: telemetry, ENERGY_STREAM.name: energy}


def produce(settings: Settings, spec: StreamSpec, events: list) -> None:
    """Produce ``events`` to the stream's topic (keyed by machine) and wait for every acknowledgement."""
    from plantstream.connect.kafka import producer
    from plantstream.contract.topics import message_key, topic_name
    from plantstream.streaming.runner import prepare_flow

    prepare_flow(settings)
    codec = Codec(spec.payload)
    errors: list[str] = []
    client = producer(settings)
    topic = topic_name(settings, spec.topic)
    for event in events:
        client.produce(
            topic,
            value=codec.encode(event),
            key=message_key(event.machine_id),
            on_delivery=lambda err, _msg: errors.append(str(err)) if err is not None else None,
        )
        client.poll(0)
    assert client.flush(60) == 0, "producer did not deliver everything"
    assert not errors, errors[:3]


def cold_resources(settings: Settings) -> dict[str, object]:
    """The resources the cold tier's assets and jobs use (the code location binds the same ones)."""
    from plantstream.orchestration.resources import HotStore, Lake

    return {"lake": Lake(settings), "hotstore": HotStore(settings)}
