"""Two hostile, well-formed messages in the middle of a good stream (docs/streaming.md,
"Event time and duplicates"), on the real platform:

* an event whose ``source_ts`` lies centuries ahead of its hand-off to Kafka is
  dead-lettered as ``future_event_time``; it does not move the partition's watermark, so
  nothing after it is late;
* a second copy of ``(machine, seq)`` with different content (a device or gateway bug) is
  kept in bronze as received, but every deduplicated store and aggregate keeps the first
  copy (lowest Kafka offset): ``telemetry_raw FINAL`` and the windows.

The good events around them are unaffected: the hot store's windows equal a batch
recomputation of the good events alone.
"""

from __future__ import annotations

import collections

import msgspec
import pyarrow as pa
import pytest
from telemetry_flow_io import assert_windows_match_bronze, bronze_table, hot_arrow, produce, read_topic
from telemetry_samples import CODEC, telemetry_series

from plantstream.contract import ErrorKind
from plantstream.contract.topics import DEAD_LETTERS, topic_name
from plantstream.streaming.runner import run_flow

pytestmark = pytest.mark.integration
CENTURIES_MS = 400 * 365 * 86_400_000


def test_a_far_future_event_and_a_conflicting_duplicate_leave_the_good_events_alone(stream_settings) -> None:
    settings = stream_settings(window_seconds=60, second_window_seconds=300, allowed_lateness_seconds=5)
    good = telemetry_series(machines=4, seconds=600)
    middle = len(good) // 2
    victim = good[middle - 5]  # sent again, changed, while its window is still open
    conflicting = msgspec.structs.replace(victim, value=victim.value + 0.5)  # still in range
    far_future = msgspec.structs.replace(good[middle], seq=10_000_000, source_ts=good[middle].source_ts + CENTURIES_MS)
    produce(settings, [*good[:middle], far_future, conflicting, *good[middle:]])

    stats = run_flow(settings, stop_at_end=True)

    assert stats.dead_letters == 1
    assert stats.late == 0, "the far-future event must not push the watermark ahead"
    (dead,) = read_topic(settings, topic_name(settings, DEAD_LETTERS))
    assert dict(dead.headers())["plantstream.error.kind"].decode() == ErrorKind.FUTURE_EVENT_TIME
    assert dead.value() == CODEC.encode(far_future)

    db = settings.hotstore.database
    raw = hot_arrow(settings, f"SELECT machine_id, seq, value FROM {db}.telemetry_raw FINAL")
    assert raw.num_rows == len(good)
    kept = {(m, s): v for m, s, v in zip(*(raw.column(c).to_pylist() for c in raw.column_names), strict=True)}
    assert kept[(victim.machine_id, victim.seq)] == victim.value, "the first copy wins in the hot store"

    bronze = bronze_table(settings)
    keys = zip(bronze.column("machine_id").to_pylist(), bronze.column("seq").to_pylist(), strict=True)
    copies = collections.Counter(keys)
    assert bronze.num_rows == len(good) + 1 and copies[(victim.machine_id, victim.seq)] == 2, "bronze keeps both"

    first_copies = bronze.filter(_not_the_later_copy(bronze, victim.machine_id, victim.seq))
    assert first_copies.num_rows == len(good)
    for width in (60, 300):
        expected = assert_windows_match_bronze(settings, first_copies, width, rtol=1e-12)
        assert set(expected.column("count").to_pylist()) == {width}, "every good event is in its window"


def _not_the_later_copy(bronze: pa.Table, machine_id: str, seq: int) -> list[bool]:
    """Every row except the copy of ``(machine_id, seq)`` at the higher Kafka offset."""
    rows = list(
        zip(
            *(bronze.column(c).to_pylist() for c in ("machine_id", "seq", "kafka_partition", "kafka_offset")),
            strict=True,
        )
    )
    offsets = sorted((p, o) for m, s, p, o in rows if (m, s) == (machine_id, seq))
    later = offsets[-1]
    return [not ((m, s) == (machine_id, seq) and (p, o) == later) for m, s, p, o in rows]
