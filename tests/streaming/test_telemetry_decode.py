"""Decoding and validation of a Kafka batch: columns for the valid, a reason for every other."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_samples import BASE_MS, CODEC, malformed_payloads, reading, telemetry_series

from plantstream.contract.columns import bronze_schema
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.contract.topics import DEAD_LETTERS, LATE_EVENTS, TELEMETRY, topic_name
from plantstream.settings import load_settings
from plantstream.streaming.kafka_source import RawBatch
from plantstream.streaming.stream_decode import StreamDecoder

DECODER = StreamDecoder(TELEMETRY_STREAM, max_event_time_ahead_s=300)


def raw(values: list[bytes | None], first_offset: int = 1000) -> RawBatch:
    offsets = np.arange(first_offset, first_offset + len(values), dtype=np.int64)
    return RawBatch("telemetry", 3, offsets, [f"k{i}".encode() for i in range(len(values))], values)


def test_valid_events_become_bronze_columns() -> None:
    events = telemetry_series(machines=2, seconds=3)
    decoded = DECODER.decode(raw([CODEC.encode(e) for e in events]))
    assert decoded.dead_letters == []
    table = decoded.events
    assert table.schema == bronze_schema(TELEMETRY_STREAM)
    assert table.column("machine_id").to_pylist() == [e.machine_id for e in events]
    assert table.column("seq").to_pylist() == [e.seq for e in events]
    assert table.column("kafka_partition").to_pylist() == [3] * len(events)
    assert table.column("kafka_offset").to_pylist() == list(range(1000, 1000 + len(events)))
    assert table.column("event_ts").cast(pa.int64()).to_pylist() == [e.event_ts for e in events]
    assert str(table.column("event_date")[0]) == str(np.datetime64(BASE_MS, "ms").astype("datetime64[D]"))


def test_event_time_falls_back_to_read_time() -> None:
    event = reading(0, 1, BASE_MS, "torque", 1.0)
    no_source = CODEC.encode(event).replace(f'"source_ts":{BASE_MS}'.encode(), b'"source_ts":null')
    decoded = DECODER.decode(raw([no_source]))
    assert decoded.events.column("event_ts").cast(pa.int64()).to_pylist() == [BASE_MS + 3]


def test_every_bad_message_is_dead_lettered_with_its_reason_and_origin() -> None:
    good = [CODEC.encode(e) for e in telemetry_series(machines=1, seconds=2)]
    bad = malformed_payloads()
    values: list[bytes | None] = []
    for i, (payload, _) in enumerate(bad):  # interleave good and bad
        values += [good[i % len(good)], payload]
    values.append(None)
    decoded = DECODER.decode(raw(values))
    assert decoded.events.num_rows == len(bad)
    by_offset = {d.offset: d for d in decoded.dead_letters}
    assert len(by_offset) == len(bad) + 1
    for i, (payload, kind) in enumerate(bad):
        letter = by_offset[1000 + 2 * i + 1]
        assert letter.value == payload
        assert letter.key == f"k{2 * i + 1}".encode()
        assert letter.error.kind.value == kind
        headers = dict(letter.headers())
        assert headers["plantstream.error.kind"] == kind.encode()
        assert headers["plantstream.source.offset"] == str(letter.offset).encode()
        assert headers["plantstream.source.partition"] == b"3"
        assert headers["plantstream.error.reason"]
    assert by_offset[1000 + 2 * len(bad)].error.kind.value == "empty"
    impossible = [d for d in decoded.dead_letters if d.error.kind.value == "impossible_value"]
    assert {dict(d.headers())["plantstream.error.field"] for d in impossible} == {b"value"}
    # Reasons are for people: plain numbers, not numpy reprs such as ``np.float64(1e+09)``.
    assert all(b"np." not in dict(d.headers())["plantstream.error.reason"] for d in impossible)
    assert decoded.raw_index.tolist() == [2 * i for i in range(len(bad))]


@settings(max_examples=100, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False), signal=st.sampled_from(["torque", "vibration", "x"]))
def test_validation_agrees_with_the_signal_ranges(value: float, signal: str) -> None:
    from plantstream.contract.signals import valid_range

    decoded = DECODER.decode(raw([CODEC.encode(reading(0, 1, BASE_MS, signal, value))]))
    limits = valid_range(signal)
    ok = limits is not None and limits[0] <= value <= limits[1]
    assert decoded.events.num_rows == int(ok)
    assert len(decoded.dead_letters) == int(not ok)


def test_stale_readings_without_a_value_are_valid() -> None:
    decoded = DECODER.decode(raw([CODEC.encode(reading(0, 1, BASE_MS, "torque", None))]))
    assert decoded.dead_letters == []
    assert decoded.events.column("value").to_pylist() == [None]


def test_topic_names_are_the_catalogue_behind_the_prefix(tmp_path) -> None:
    plain = load_settings(state_dir=tmp_path)
    assert [topic_name(plain, t) for t in (TELEMETRY, DEAD_LETTERS, LATE_EVENTS)] == [
        "factory.machine.telemetry",
        "factory.deadletter",
        "factory.machine.telemetry.late",
    ]
    prefixed = load_settings(state_dir=tmp_path, kafka={"topic_prefix": "site3."})
    assert topic_name(prefixed, TELEMETRY) == "site3.factory.machine.telemetry"
