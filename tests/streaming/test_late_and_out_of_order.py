"""Late and out-of-order telemetry: the documented results (docs/streaming.md, "Late data").

All on one Kafka partition (the unit of watermarks) with allowed lateness L = 30 s and
60 s / 300 s windows, through the real decoder and the window state machine:

* a machine whose clock is d ≤ L behind the others loses nothing: every window complete;
* a clock d > L behind loses the events in the last d - L seconds of each of its
  windows to the late topic (they still reach raw and bronze);
* a gateway that replays an hour of buffer for a machine whose partition has moved on:
  every replayed event is late (late topic, raw, bronze; no window counts it);
* a whole partition replayed from an hour of buffer in time order, or shuffled within
  the lateness: nothing late, windows identical to the in-order stream.
"""

from __future__ import annotations

import random

import numpy as np
from telemetry_samples import BASE_MS, reading
from test_windowing import batches_of, closed, late, run

from plantstream.contract import Telemetry
from plantstream.domain.aggregates import sort_aggregates, window_aggregates
from plantstream.streaming.windowing import PartitionWindows, WindowConfig

L_MS = 30_000
CONFIG = WindowConfig(window_seconds=(60, 300), allowed_lateness_ms=L_MS, idle_key_expiry_ms=3_600_000)


def live(machines: range, seconds: int, *, start_ms: int = BASE_MS, skew_ms: dict[int, int] | None = None):
    """1 Hz torque from each machine in arrival order; ``skew_ms[m]``: machine m's clock behind."""
    skew_ms = skew_ms or {}
    return [
        reading(m, step, start_ms + step * 1000 - skew_ms.get(m, 0), "torque", 40.0 + step % 7)
        for step in range(seconds)
        for m in machines
    ]


def windows_of(outputs: list, width: int):
    tables = [c.aggregates for c in closed(outputs) if c.window_seconds == width]
    import pyarrow as pa

    return sort_aggregates(pa.concat_tables(tables))


def drain(events: list[Telemetry], sizes: list[int] | None = None) -> list:
    windows = PartitionWindows(CONFIG)
    outputs = run(windows, batches_of(events, sizes or [500]))
    return outputs + windows.flush()


def late_count(outputs: list) -> int:
    return sum(len(x.values) for x in late(outputs))


def test_a_clock_30_s_behind_loses_nothing() -> None:
    events = live(range(6), 900, skew_ms={5: 30_000})
    outputs = drain(events)
    assert late_count(outputs) == 0
    for width in (60, 300):
        expected = sort_aggregates(window_aggregates(_table(events), width))
        got = windows_of(outputs, width)
        assert got.column("count").to_pylist() == expected.column("count").to_pylist()
        assert got.column("mean").to_pylist() == expected.column("mean").to_pylist()


def test_a_clock_further_behind_than_the_lateness_loses_the_end_of_each_window() -> None:
    d_ms = 40_000
    events = live(range(6), 900, skew_ms={5: d_ms})
    outputs = drain(events)
    late_ts = np.concatenate([x.event_ms for x in late(outputs)])
    skewed = np.array([e.source_ts for e in events if e.machine_id == "cnc-05"])
    # Late exactly when the event's window ends at or before the watermark, i.e. the others'
    # time - L = its own time + d - L: the last d - L seconds of every one of its windows.
    expected = skewed[skewed % 60_000 >= 60_000 - (d_ms - L_MS)]
    assert sorted(late_ts.tolist()) == sorted(expected.tolist())
    assert len(late_ts) > 0
    assert {x.partition for x in late(outputs)} == {0}


def test_a_gateway_replaying_an_hour_after_its_partition_moved_on_is_late_but_kept() -> None:
    hour = 3_600
    others = live(range(5), 600, start_ms=BASE_MS + hour * 1000)  # the partition is live
    replay = live(range(5, 6), hour)  # machine 5's gateway sends its buffered hour afterwards
    outputs = drain(others + replay)
    assert late_count(outputs) == len(replay), "every replayed event's window had closed"
    late_values = {v for x in late(outputs) for v in x.values}
    assert len(late_values) == len(replay)  # original bytes, each once
    counted = sum(c.events for c in closed(outputs) if c.window_seconds == 60)
    assert counted == len(others), "late events must not enter any window"


def test_a_partition_replayed_in_order_or_shuffled_within_the_lateness_gives_the_live_result() -> None:
    events = live(range(6), 3_600)  # an hour of buffer, in time order
    in_order = drain(events, [5_000])
    rng = random.Random(3)
    shuffled = sorted(events, key=lambda e: e.source_ts + rng.uniform(0, L_MS - 1_000))
    out_of_order = drain(shuffled, [777])
    assert late_count(in_order) == late_count(out_of_order) == 0
    for width in (60, 300):
        a, b = windows_of(in_order, width), windows_of(out_of_order, width)
        assert a.num_rows == 6 * 3_600 // width
        for name in ("count", "min", "max", "mean", "p95"):
            assert a.column(name).to_pylist() == b.column(name).to_pylist()


def _table(events: list[Telemetry]):
    import pyarrow as pa

    return pa.table(
        {
            "machine_id": [e.machine_id for e in events],
            "signal": [e.signal for e in events],
            "seq": [e.seq for e in events],
            "event_ts": [e.source_ts for e in events],
            "value": [e.value for e in events],
        }
    )
