"""The telemetry dataflow end to end on the real local platform (Tansu, hot store, S3)."""

from __future__ import annotations

import collections

import pytest
from telemetry_flow_io import assert_windows_match_bronze, bronze_table, hot_scalar, produce, read_topic
from telemetry_samples import BASE_MS, CODEC, SIGNALS, malformed_payloads, reading, telemetry_series

from plantstream.contract.topics import DEAD_LETTERS, LATE_EVENTS, topic_name
from plantstream.streaming.runner import run_flow

pytestmark = pytest.mark.integration


def test_drain_writes_every_valid_event_once_and_dead_letters_the_rest(stream_settings) -> None:
    settings = stream_settings()
    events = telemetry_series(machines=6, seconds=200)
    bad = malformed_payloads()
    produce(settings, events, [payload for payload, _ in bad])

    stats = run_flow(settings, stop_at_end=True)

    n = len(events)
    assert stats.events_in == n + len(bad)
    assert stats.events_valid == n
    assert stats.dead_letters == len(bad)
    db = settings.hotstore.database
    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw FINAL") == n
    bronze = bronze_table(settings)
    assert bronze.num_rows == n
    dlq = read_topic(settings, topic_name(settings, DEAD_LETTERS))
    kinds = collections.Counter(dict(m.headers())["plantstream.error.kind"].decode() for m in dlq)
    assert kinds == collections.Counter(kind for _, kind in bad)
    assert sorted(m.value() for m in dlq) == sorted(payload for payload, _ in bad)
    assert stats.windows_written > 0

    # A second run with no new data duplicates nothing.
    again = run_flow(settings, stop_at_end=True)
    assert again.events_in == 0
    assert hot_scalar(settings, f"SELECT count() FROM {db}.telemetry_raw") == n
    assert bronze_table(settings).num_rows == n
    assert len(read_topic(settings, topic_name(settings, DEAD_LETTERS))) == len(bad)


def test_hot_store_aggregates_equal_a_recomputation_from_bronze(stream_settings) -> None:
    settings = stream_settings(window_seconds=60, second_window_seconds=300, allowed_lateness_seconds=5)
    events = telemetry_series(machines=5, seconds=900)
    produce(settings, events)

    stats = run_flow(settings, stop_at_end=True)
    assert stats.late == 0

    bronze = bronze_table(settings)
    for width in (60, 300):
        expected = assert_windows_match_bronze(settings, bronze, width, rtol=1e-12)
        assert expected.num_rows == 5 * len(SIGNALS) * (900 // width)
        assert set(expected.column("count").to_pylist()) == {width}


def test_a_restart_reads_the_open_windows_back_from_kafka_and_the_windows_stay_exact(stream_settings, caplog) -> None:
    settings = stream_settings(window_seconds=60, second_window_seconds=300, allowed_lateness_seconds=5)
    events = telemetry_series(machines=5, seconds=900)
    half = [e for e in events if e.source_ts < BASE_MS + 450_000]  # stops inside a 60 s and a 300 s window
    produce(settings, half)
    run_flow(settings, stop_at_end=True)
    produce(settings, events[len(half) :])  # telemetry_series is in time order

    with caplog.at_level("INFO", logger="plantstream.streaming.windowing"):
        stats = run_flow(settings, stop_at_end=True)

    assert stats.events_in == len(events) - len(half)
    replays = [r for r in caplog.records if getattr(r, "event", None) == "window_replay"]
    assert replays and sum(r.rows for r in replays) > 0  # the snapshot had no rows: they came from Kafka
    bronze = bronze_table(settings)
    for width in (60, 300):
        expected = assert_windows_match_bronze(settings, bronze, width, rtol=1e-12)
        assert set(expected.column("count").to_pylist()) == {width}


def test_late_events_go_to_the_late_topic_and_still_reach_the_raw_sinks(stream_settings) -> None:
    settings = stream_settings(allowed_lateness_seconds=10)
    events = telemetry_series(machines=1, seconds=300)
    stragglers = [reading(0, 10_000 + i, BASE_MS + 5_000 + i, "torque", 1.0) for i in range(3)]
    produce(settings, events + stragglers)  # one machine: one partition, stragglers last

    stats = run_flow(settings, stop_at_end=True)

    assert stats.late == len(stragglers)
    late = read_topic(settings, topic_name(settings, LATE_EVENTS))
    assert sorted(m.value() for m in late) == sorted(CODEC.encode(e) for e in stragglers)
    assert {dict(m.headers())["plantstream.error.kind"] for m in late} == {b"late"}
    total = len(events) + len(stragglers)
    assert hot_scalar(settings, f"SELECT count() FROM {settings.hotstore.database}.telemetry_raw FINAL") == total
    assert bronze_table(settings).num_rows == total
    first_minute = hot_scalar(
        settings,
        f"SELECT sum(`count`) FROM {settings.hotstore.database}.telemetry_windows FINAL "
        f"WHERE window_seconds = 60 AND toUnixTimestamp64Milli(window_start) = {BASE_MS}",
    )
    assert first_minute == 60 * len(SIGNALS), "late events must not be counted in a closed window"
