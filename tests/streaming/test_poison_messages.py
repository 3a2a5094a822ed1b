"""Poison messages: a mixed stream with many kinds of malformed messages never stops the flow.

``poison_from(rng)`` makes bad payloads of many kinds (and ``poison`` is the same as a
hypothesis strategy) (not JSON, truncated,
wrong JSON type, missing/extra/mistyped fields, unknown signals and versions, values
outside a signal's range, invalid UTF-8, empty).  The property test runs the decoder on
many mixed batches; the integration test streams thousands of good events with ≥ 5 %
poison through the real flow: every good event lands, every bad one is in the
dead-letter topic with its reason and origin, the drain completes.
"""

from __future__ import annotations

import collections
import json
import random

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from telemetry_flow_io import bronze_table, hot_scalar, produce, read_topic
from telemetry_samples import BASE_MS, CODEC, reading, telemetry_series

from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.contract.topics import DEAD_LETTERS, TELEMETRY, topic_name
from plantstream.streaming.kafka_source import RawBatch
from plantstream.streaming.runner import run_flow
from plantstream.streaming.stream_decode import StreamDecoder

GOOD = msgspec.to_builtins(reading(7, 1, BASE_MS, "torque", 40.0))
FIELDS = sorted(GOOD)
ERROR_KINDS = {"empty", "malformed", "schema", "future_version", "impossible_value"}


def _dump(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _scalar(rng: random.Random) -> object:
    return rng.choice([None, True, 2**70, -(2**63), 1.5e300, "", "x" * rng.randint(1, 40), [], {"a": 1}])


def poison_from(rng: random.Random) -> bytes:
    """One malformed telemetry payload of a randomly chosen kind."""
    kind = rng.randrange(11)
    whole = _dump(GOOD)
    if kind == 0:  # random bytes that are not a JSON object
        return b"x" + bytes(rng.randrange(256) for _ in range(rng.randint(0, 60)))
    if kind == 1:  # a good message cut short
        return whole[: rng.randrange(len(whole))]
    if kind == 2:  # valid JSON, not an object
        return _dump(rng.choice([None, 1, "telemetry", [1, 2], [GOOD]]))
    if kind == 3:  # a required field missing
        field = rng.choice(["site", "area", "line", "machine_id", "seq", "read_ts", "ingest_ts", "signal"])
        return _dump({k: v for k, v in GOOD.items() if k != field})
    if kind == 4:  # a field of the wrong type
        field = rng.choice(["seq", "machine_id", "read_ts", "ingest_ts", "signal", "site"])
        value = _scalar(rng)
        while type(value) is type(GOOD[field]) or (value is None and field == "source_ts"):
            value = _scalar(rng)
        return _dump({**GOOD, field: value})
    if kind == 5:  # a signal nobody knows
        return _dump({**GOOD, "signal": "unknown_" + "".join(rng.choices("abcdefgh", k=rng.randint(1, 10)))})
    if kind == 6:  # a schema version from the future
        return _dump({**GOOD, "v": rng.randint(2, 2**15 - 1)})
    if kind == 7:  # physically impossible values
        signal = rng.choice(["torque", "vibration", "air_temperature"])
        return _dump({**GOOD, "signal": signal, "value": rng.choice([1e9, -1e9, -3.0, 5_000.0])})
    if kind == 8:  # not UTF-8
        return whole[:-2] + b"\xff\xfe}"
    if kind == 9:  # negative sequence numbers
        return _dump({**GOOD, "seq": rng.randint(-(2**40), -1)})
    return b""  # empty


poison = st.randoms(use_true_random=False).map(poison_from)


def _raw(values: list[bytes], partition: int = 0) -> RawBatch:
    offsets = np.arange(len(values), dtype=np.int64)
    return RawBatch("t", partition, offsets, [b"k"] * len(values), list(values))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad=st.lists(poison, min_size=1, max_size=20), good_count=st.integers(0, 30), seed=st.integers(0, 2**16))
def test_decoder_splits_any_mix_into_valid_rows_and_reasoned_dead_letters(bad, good_count, seed) -> None:
    good = [CODEC.encode(e) for e in telemetry_series(machines=1, seconds=good_count // 3 + 1)][:good_count]
    mixed = [(v, True) for v in good] + [(v, False) for v in bad]
    random.Random(seed).shuffle(mixed)
    decoded = StreamDecoder(TELEMETRY_STREAM, max_event_time_ahead_s=300).decode(_raw([v for v, _ in mixed]))
    good_offsets = {i for i, (_, ok) in enumerate(mixed) if ok}
    assert set(decoded.events.column("kafka_offset").to_pylist()) == good_offsets
    assert {d.offset for d in decoded.dead_letters} == set(range(len(mixed))) - good_offsets
    for letter in decoded.dead_letters:
        assert letter.error.kind.value in ERROR_KINDS
        assert letter.error.reason
        assert letter.value == mixed[letter.offset][0]


@pytest.mark.integration
def test_a_stream_with_many_kinds_of_poison_lands_every_good_event_and_dead_letters_the_rest(stream_settings) -> None:
    rng = random.Random(20261125)
    bad = [poison_from(rng) for _ in range(300)]
    settings = stream_settings()
    events = telemetry_series(machines=8, seconds=150)  # 3,600 good events
    assert len(bad) / (len(bad) + len(events)) >= 0.05
    produce(settings, events, bad)

    stats = run_flow(settings, stop_at_end=True)

    assert stats.events_in == len(events) + len(bad)
    assert stats.events_valid == len(events)
    assert stats.dead_letters == len(bad)
    db = settings.hotstore.database
    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw FINAL") == len(events)
    assert bronze_table(settings).num_rows == len(events)
    dlq = read_topic(settings, topic_name(settings, DEAD_LETTERS))
    assert collections.Counter(m.value() for m in dlq) == collections.Counter(bad)
    kinds = collections.Counter()
    for message in dlq:
        headers = dict(message.headers())
        kinds[headers["plantstream.error.kind"].decode()] += 1
        assert headers["plantstream.error.reason"]
        assert headers["plantstream.source.topic"] == topic_name(settings, TELEMETRY).encode()
    assert set(kinds) == ERROR_KINDS, kinds
