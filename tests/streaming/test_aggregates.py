"""The shared window aggregates equal a plain numpy recomputation, per window."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plantstream.domain import aggregates
from plantstream.domain.aggregates import WINDOW_AGGREGATE_SCHEMA, epoch_ms, window_aggregates

rows = st.lists(
    st.tuples(
        st.sampled_from(["m1", "m2", "m3"]),
        st.sampled_from(["torque", "vibration"]),
        st.integers(0, 40),  # seq: small range, so duplicates happen
        st.integers(0, 400_000),  # event ms
        st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)),
    ),
    max_size=200,
)


def table(data: list[tuple]) -> pa.Table:
    columns = list(zip(*data, strict=True)) if data else [[]] * 5
    return pa.table(
        {
            "machine_id": pa.array(columns[0], pa.string()),
            "signal": pa.array(columns[1], pa.string()),
            "seq": pa.array(columns[2], pa.int64()),
            "event_ts": pa.array(columns[3], pa.int64()),
            "value": pa.array(columns[4], pa.float64()),
        }
    )


def recompute(data: list[tuple], width_s: int) -> dict[tuple, dict]:
    """Per-window aggregates the slow, obvious way."""
    latest: dict[tuple, tuple] = {}
    for machine, signal, seq, ts, value in data:  # the first copy of a (machine, seq) wins
        latest.setdefault((machine, signal, ts // (width_s * 1000) * width_s * 1000, seq), (ts, value))
    groups: dict[tuple, list[tuple[int, int, float]]] = {}
    for (machine, signal, start, seq), (ts, value) in latest.items():
        if value is not None:
            groups.setdefault((machine, signal, start), []).append((seq, ts, value))
    out = {}
    for key, items in groups.items():
        items.sort()
        values = np.array([v for _, _, v in items])
        out[key] = {
            "count": len(values),
            "min": values.min(),
            "max": values.max(),
            "mean": values.mean(),
            "std": values.std(),
            "p95": np.percentile(values, 95),
            "last": items[-1][2],
            "last_ts": items[-1][1],
        }
    return out


@settings(max_examples=150, deadline=None)
@given(data=rows, width_s=st.sampled_from([60, 300]))
def test_window_aggregates_equal_a_numpy_recomputation(data: list[tuple], width_s: int) -> None:
    result = window_aggregates(table(data), width_s)
    assert result.schema == WINDOW_AGGREGATE_SCHEMA
    expected = recompute(data, width_s)
    starts = epoch_ms(result.column("window_start"))
    got = {}
    for i, row in enumerate(result.to_pylist()):
        got[(row["machine_id"], row["signal"], int(starts[i]))] = row
        assert epoch_ms(result.column("window_end"))[i] == starts[i] + width_s * 1000
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        row = got[key]
        assert row["count"] == want["count"]
        for name in ("min", "max", "last"):
            assert row[name] == want[name], name
        for name in ("mean", "std", "p95"):
            assert np.isclose(row[name], want[name], rtol=1e-9, atol=1e-6), (name, row[name], want[name])
    last_ts = dict(zip(got, epoch_ms(result.column("last_ts")).tolist(), strict=True))
    assert last_ts == {key: want["last_ts"] for key, want in expected.items()}


def test_input_order_does_not_change_the_result() -> None:
    rng = np.random.default_rng(7)
    data = [("m1", "torque", i, 1_000 * i, float(rng.normal(40, 5))) for i in range(500)]
    shuffled = [data[i] for i in rng.permutation(len(data))]
    assert window_aggregates(table(data), 60).equals(window_aggregates(table(shuffled), 60))


def test_the_copy_with_the_lowest_kafka_offset_wins_whatever_the_input_order() -> None:
    # Two copies of (m1, seq 3) that disagree (a device or gateway bug): offset 10 came first.
    first, later = ("m1", "torque", 3, 5_000, 1.0), ("m1", "torque", 3, 5_000, 99.0)
    for rows, offsets in (([first, later], [10, 20]), ([later, first], [20, 10])):
        events = table(rows).append_column("kafka_offset", pa.array(offsets, pa.int64()))
        result = window_aggregates(events, 60)
        assert result.column("count").to_pylist() == [1]
        assert result.column("last").to_pylist() == [1.0]


def test_a_window_of_only_missing_values_produces_no_row() -> None:
    assert window_aggregates(table([("m1", "torque", 1, 5, None)]), 60).num_rows == 0
    assert window_aggregates(table([]), 60).num_rows == 0


def test_timestamp_event_times_are_accepted() -> None:
    t = table([("m1", "torque", 1, 61_000, 2.0)])
    as_ts = t.set_column(3, "event_ts", t.column("event_ts").cast(pa.timestamp("ms", tz="UTC")))
    assert window_aggregates(as_ts, 60).equals(window_aggregates(t, 60))
    assert epoch_ms(window_aggregates(t, 60).column("window_start")).tolist() == [60_000]


def test_both_ways_of_sorting_within_groups_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    counts = rng.integers(1, 40, size=300)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    ends = starts + counts
    values = rng.normal(size=int(counts.sum())).round(1)  # ties included
    per_group = aggregates._sorted_within_groups(values, starts, ends)
    monkeypatch.setattr(aggregates, "_PER_GROUP_SORT_MAX_GROUPS", 0)
    assert np.array_equal(per_group, aggregates._sorted_within_groups(values, starts, ends))
    for first, end in zip(starts, ends, strict=True):
        assert np.all(np.diff(per_group[first:end]) >= 0)
