"""Event-time windows: closing, lateness, expiry, recovery state, batch-boundary independence."""

from __future__ import annotations

import copy
import pickle

import bytewax.operators as op
import numpy as np
import pyarrow as pa
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st
from telemetry_samples import BASE_MS, CODEC, reading, telemetry_series

from plantstream.contract import Telemetry
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.domain.aggregates import sort_aggregates, window_aggregates
from plantstream.streaming.kafka_source import RawBatch
from plantstream.streaming.stream_decode import DecodedBatch, StreamDecoder
from plantstream.streaming.windowing import (
    ClosedWindows,
    LateEvents,
    PartitionWindows,
    TelemetryWindowLogic,
    WindowConfig,
)

CONFIG = WindowConfig(window_seconds=(60, 300), allowed_lateness_ms=10_000, idle_key_expiry_ms=600_000)
DECODER = StreamDecoder(TELEMETRY_STREAM, max_event_time_ahead_s=300)


def batches_of(events: list[Telemetry], sizes: list[int] | None = None, *, start_offset: int = 0) -> list[DecodedBatch]:
    """Cut events into Kafka-like batches (of ``sizes``, cycling) and decode them."""
    out, i, k = [], 0, 0
    sizes = sizes or [len(events) or 1]
    while i < len(events):
        size = max(1, sizes[k % len(sizes)])
        chunk = events[i : i + size]
        offsets = np.arange(start_offset + i, start_offset + i + len(chunk), dtype=np.int64)
        raw = RawBatch("t", 0, offsets, [e.machine_id.encode() for e in chunk], [CODEC.encode(e) for e in chunk])
        out.append(DECODER.decode(raw))
        i, k = i + size, k + 1
    return out


def replay_of(batches: list[DecodedBatch]):
    """What Kafka would give a resume: the batches' events, whatever offsets it asks for."""

    def replay(partition: int, first: int, last: int):
        for batch in batches:
            if batch.events.num_rows and batch.last_offset >= first and batch.first_offset <= last:
                yield batch.events

    return replay


def run(windows: PartitionWindows, batches: list[DecodedBatch]) -> list:
    out = []
    for batch in batches:
        out.extend(windows.process(batch))
    return out


def closed(outputs: list) -> list[ClosedWindows]:
    return [o for o in outputs if isinstance(o, ClosedWindows)]


def late(outputs: list) -> list[LateEvents]:
    return [o for o in outputs if isinstance(o, LateEvents)]


def test_a_window_closes_once_the_watermark_passes_its_end_and_is_dropped() -> None:
    w = PartitionWindows(CONFIG, topic="t")
    events = telemetry_series(machines=2, seconds=70)  # up to BASE+69 s: watermark BASE+59 s
    out = run(w, batches_of(events))
    assert closed(out) == []
    assert sorted(w.windows[60]) == [BASE_MS, BASE_MS + 60_000]
    # An event at +70 s moves the watermark to +60 s = the end of the first minute.
    out = run(w, batches_of([reading(0, 10_000, BASE_MS + 70_000, "torque", 1.0)]))
    [first] = closed(out)
    assert (first.window_seconds, first.window_start_ms, first.final) == (60, BASE_MS, True)
    assert first.aggregates.num_rows == 2 * 3  # machines x signals
    assert set(first.aggregates.column("count").to_pylist()) == {60}
    assert BASE_MS not in w.windows[60], "closed windows must be dropped from state"
    assert first.topic == "t" and first.partition == 0


def test_events_for_a_closed_window_are_late_and_kept_out_of_every_window() -> None:
    w = PartitionWindows(CONFIG, topic="t")
    run(w, batches_of([reading(0, 0, BASE_MS + 400_000, "torque", 1.0)]))  # watermark = +390 s
    straggler = reading(1, 5, BASE_MS + 30_000, "torque", 2.0)  # its 60 s and 300 s windows have closed
    on_time = reading(1, 6, BASE_MS + 385_000, "torque", 3.0)  # still open
    out = run(w, batches_of([straggler, on_time], start_offset=100))
    [late_events] = late(out)
    assert late_events.values == [CODEC.encode(straggler)]
    assert late_events.offsets.tolist() == [100]
    assert late_events.watermark_ms.tolist() == [BASE_MS + 390_000]
    flushed = w.flush()
    counts = {(c.window_seconds, c.window_start_ms): c.events for c in flushed}
    assert counts[(60, BASE_MS + 360_000)] == 2  # the first event and on_time, not the straggler
    assert all(c.window_start_ms >= BASE_MS + 300_000 for c in flushed)


def test_an_event_is_late_if_any_of_its_windows_closed() -> None:
    config = WindowConfig(window_seconds=(60, 300), allowed_lateness_ms=0, idle_key_expiry_ms=600_000)
    w = PartitionWindows(config, topic="t")
    run(w, batches_of([reading(0, 0, BASE_MS + 120_000, "torque", 1.0)]))
    # +50 s: its minute [0, 60) closed at watermark +120 s, its 5 minutes are still open.
    out = run(w, batches_of([reading(0, 1, BASE_MS + 50_000, "torque", 1.0)]))
    assert len(late(out)) == 1
    assert sum(c.events for c in w.flush() if c.window_seconds == 300) == 1


def test_idle_machines_expire_from_state() -> None:
    config = WindowConfig(window_seconds=(60,), allowed_lateness_ms=0, idle_key_expiry_ms=120_000)
    w = PartitionWindows(config, topic="t")
    run(w, batches_of([reading(0, 0, BASE_MS, "torque", 1.0), reading(1, 0, BASE_MS, "torque", 1.0)]))
    assert set(w.machines) == {"cnc-00", "cnc-01"}
    seq = 1
    for t in range(10_000, 300_000, 10_000):  # only machine 0 keeps sending
        run(w, batches_of([reading(0, seq, BASE_MS + t, "torque", 1.0)]))
        seq += 1
    assert set(w.machines) == {"cnc-00"}
    assert len(w.windows[60]) == 1, "only the open minute stays in state"


def test_sequence_gaps_are_counted() -> None:
    w = PartitionWindows(CONFIG, topic="t")
    run(w, batches_of([reading(0, s, BASE_MS + s, "torque", 1.0) for s in (0, 1, 2, 5, 6)]))
    run(w, batches_of([reading(0, s, BASE_MS + s, "torque", 1.0) for s in (9, 10)]))
    assert w.seq_gaps == 2 + 2


def test_windows_closed_together_have_the_aggregates_each_window_has_alone() -> None:
    # One batch of 15 minutes closes ~14 one-minute and 2 five-minute windows at once
    # (they are aggregated in one pass, then split): each must equal its own window's
    # events aggregated alone, with its own event count.
    events = telemetry_series(machines=4, seconds=900)
    (batch,) = batches_of(events)
    emitted = closed(run(PartitionWindows(CONFIG, topic="t"), [batch]))
    assert len([c for c in emitted if c.window_seconds == 60]) >= 10
    assert len([c for c in emitted if c.window_seconds == 300]) == 2
    event_ms = batch.events.column("event_ts").cast(pa.int64()).to_numpy()
    for c in emitted:
        end = c.window_start_ms + c.window_seconds * 1000
        rows = batch.events.filter(pa.array((event_ms >= c.window_start_ms) & (event_ms < end)))
        assert c.events == rows.num_rows > 0
        assert sort_aggregates(c.aggregates).equals(sort_aggregates(window_aggregates(rows, c.window_seconds)))


def test_snapshot_is_a_copy_that_later_processing_does_not_change() -> None:
    w = PartitionWindows(CONFIG, topic="t")
    events = telemetry_series(machines=3, seconds=200)
    batches = batches_of(events, [37])
    run(w, batches[:5])
    snap = w.snapshot()
    frozen = pickle.dumps(snap)
    run(w, batches[5:])
    w.flush()
    assert pickle.dumps(snap) == frozen
    restored = PartitionWindows(CONFIG, copy.deepcopy(pickle.loads(frozen)), topic="t", replay=replay_of(batches))
    assert restored.watermark_ms == pickle.loads(frozen)["max_event_ms"] - CONFIG.allowed_lateness_ms


def _final_outputs(batches: list[DecodedBatch], snapshot_after: int | None = None) -> tuple[dict, list]:
    w = PartitionWindows(CONFIG, topic="t")
    out = []
    for i, batch in enumerate(batches):
        out.extend(w.process(batch))
        if snapshot_after is not None and i == snapshot_after:  # crash + restore here
            w = PartitionWindows(CONFIG, pickle.loads(pickle.dumps(w.snapshot())), topic="t", replay=replay_of(batches))
    out.extend(w.flush())
    windows = {}
    for c in closed(out):
        windows[(c.window_seconds, c.window_start_ms, c.final)] = sort_aggregates(c.aggregates)
    late_offsets = sorted(int(o) for item in late(out) for o in item.offsets)
    return windows, late_offsets


shuffled_events = st.integers(0, 2**32 - 1).map(lambda seed: _jittered(telemetry_series(machines=3, seconds=400), seed))


def _jittered(events: list[Telemetry], seed: int) -> list[Telemetry]:
    """Mostly in order, with some events delayed by up to 2 minutes (some become late)."""
    rng = np.random.default_rng(seed)
    delay = np.where(rng.random(len(events)) < 0.1, rng.integers(0, 120, len(events)), 0)
    order = np.argsort(np.arange(len(events)) + delay * 9, kind="stable")
    return [events[i] for i in order]


@settings(max_examples=25, deadline=None)
@given(events=shuffled_events, sizes=st.lists(st.integers(1, 400), min_size=1, max_size=6), crash=st.integers(0, 30))
def test_results_do_not_depend_on_batch_boundaries_or_a_restore(events, sizes, crash) -> None:
    reference = _final_outputs(batches_of(events))
    cut = batches_of(events, sizes)
    assert _final_outputs(cut) == reference
    assert _final_outputs(cut, snapshot_after=min(crash, len(cut) - 1)) == reference


@settings(max_examples=25, deadline=None)
@given(events=shuffled_events)
def test_windows_hold_exactly_the_on_time_events_and_match_a_batch_recomputation(events) -> None:
    windows, late_offsets = _final_outputs(batches_of(events, [100]))
    late_set = set(late_offsets)
    on_time = [e for i, e in enumerate(events) if i not in late_set]
    table = pa.table(
        {
            "machine_id": [e.machine_id for e in on_time],
            "signal": [e.signal for e in on_time],
            "seq": [e.seq for e in on_time],
            "event_ts": [e.event_ts for e in on_time],
            "value": [e.value for e in on_time],
        }
    )
    for width in (60, 300):
        streamed = [t for (w, _, _), t in sorted(windows.items()) if w == width]
        got = sort_aggregates(pa.concat_tables(streamed))
        assert got.equals(sort_aggregates(window_aggregates(table, width)))


def test_the_logic_runs_in_a_bytewax_flow_and_flushes_at_end_of_input() -> None:
    batches = batches_of(telemetry_series(machines=2, seconds=130), [50])
    out: list = []
    flow = Dataflow("windows_test")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(batches)), lambda b: b.key)
    windows = op.stateful_batch("windows", keyed, lambda s: TelemetryWindowLogic(CONFIG, s, topic="t", flow="test"))
    op.output("out", windows, TestingSink(out))
    run_main(flow)
    emitted = [v for _, v in out]
    final = [c for c in emitted if isinstance(c, ClosedWindows) and c.final]
    provisional = [c for c in emitted if isinstance(c, ClosedWindows) and not c.final]
    assert [(c.window_seconds, c.window_start_ms) for c in final] == [(60, BASE_MS)]
    assert {(c.window_seconds, c.window_start_ms) for c in provisional} == {
        (60, BASE_MS + 60_000),
        (60, BASE_MS + 120_000),
        (300, BASE_MS),
    }
    assert sum(c.events for c in final + provisional if c.window_seconds == 300) == 2 * 3 * 130


def test_a_snapshot_holds_no_rows_and_a_resume_reads_them_back_from_kafka() -> None:
    events = telemetry_series(machines=3, seconds=200)
    batches = batches_of(events, [50])
    w = PartitionWindows(CONFIG, topic="t")
    run(w, batches)
    snap = w.snapshot()
    assert sum(snap["open"].values()) > 500  # rows of open windows ...
    assert len(pickle.dumps(snap)) < 2_000  # ... are not in the snapshot
    asked = []

    def replay(partition: int, first: int, last: int):
        asked.append((partition, first, last))
        yield from replay_of(batches)(partition, first, last)

    restored = PartitionWindows(CONFIG, pickle.loads(pickle.dumps(snap)), topic="t", replay=replay)
    assert asked == [(0, snap["replay_from"][0], batches[-1].last_offset)]
    assert restored.replayed_rows >= max(snap["open"].values())  # each row once, for every width
    assert {k: sort_aggregates(c.aggregates) for k, c in _by_window(restored.flush()).items()} == {
        k: sort_aggregates(c.aggregates) for k, c in _by_window(w.flush()).items()
    }


def _by_window(outputs: list) -> dict:
    return {(c.window_seconds, c.window_start_ms): c for c in closed(outputs)}


def test_a_resume_says_so_when_kafka_no_longer_has_the_rows(caplog) -> None:
    batches = batches_of(telemetry_series(machines=2, seconds=100), [40])
    w = PartitionWindows(CONFIG, topic="t")
    run(w, batches)
    state = pickle.loads(pickle.dumps(w.snapshot()))
    with caplog.at_level("ERROR"):
        restored = PartitionWindows(CONFIG, state, topic="t", replay=replay_of(batches[len(batches) // 2 :]))
    assert "could not be read back from Kafka" in caplog.text
    assert restored.open_window_count == w.open_window_count


def test_a_resume_without_a_way_to_read_kafka_is_refused() -> None:
    batches = batches_of(telemetry_series(machines=2, seconds=100), [40])
    w = PartitionWindows(CONFIG, topic="t")
    run(w, batches)
    with pytest.raises(ValueError, match="replay"):
        PartitionWindows(CONFIG, w.snapshot(), topic="t")
