"""Predictive-maintenance features: their meaning, offline/online parity, bounded state, simulated data.

The parity tests are the guarantee the stream relies on: for the same machine and
time, :class:`OnlineFeatures` (fed closed minutes as they arrive) returns what
:func:`offline_features` (Dagster, vectorised) computes.  The simulated-data test checks
that the fast minute accumulator of :mod:`plantstream.models.sim_dataset` equals
``window_aggregates`` over the stock engine's telemetry.
"""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from plantstream.domain.aggregates import sort_aggregates, window_aggregates
from plantstream.models import features as feature_module
from plantstream.models.features import (
    DERIVED_FEATURES,
    FEATURE_NAMES,
    FEATURE_SIGNALS,
    MINUTE_MS,
    SIGNAL_FEATURES,
    OnlineFeatures,
    history_from_events,
    offline_features,
    to_epoch_ms,
)
from plantstream.models.labels import sample_grid
from plantstream.models.sim_dataset import DEFAULT_START_MS, simulate_dataset, simulation_plant
from plantstream.simulator.engine import PlantSimulator, snapshot_telemetry

T0 = DEFAULT_START_MS


def raw_readings(rng: np.random.Generator, machine: str, signals: dict[str, float], minutes: int) -> pd.DataFrame:
    """Readings every 1-3 s with random gaps (whole minutes missing too), drifting values."""
    rows = []
    seq = itertools.count()
    for signal, level in signals.items():
        ts = T0 + np.cumsum(rng.integers(1000, 3000, size=minutes * 40))
        ts = ts[ts < T0 + minutes * MINUTE_MS]
        gap = rng.random(minutes) < 0.15  # minutes without any reading
        ts = ts[~gap[(ts - T0) // MINUTE_MS]]
        walk = level + np.cumsum(rng.normal(0, level * 0.002, len(ts)))
        rows += [(machine, signal, next(seq), int(t), float(v)) for t, v in zip(ts, walk, strict=True)]
    return pd.DataFrame(rows, columns=["machine_id", "signal", "seq", "event_ts", "value"])


def minute_row(signal: str, start_ms: int, value: float) -> dict[str, object]:
    """One closed minute of a steady signal, as the stream emits it."""
    return {"signal": signal, "window_start": start_ms, "count": 60, "mean": value, "std": 0.1,
            "max": value + 1, "min": value - 1, "last": value}  # fmt: skip


def minute_aggs(raw: pd.DataFrame) -> pa.Table:
    return window_aggregates(pa.Table.from_pandas(raw, preserve_index=False), 60)


def online_at(
    machine: str,
    aggs: pd.DataFrame,
    history: pd.DataFrame,
    times: np.ndarray,
    rng: np.random.Generator | None = None,
    pickle_every: int = 0,
) -> pd.DataFrame:
    """What the stream would compute: windows added when they close, history as it happens."""
    state = OnlineFeatures(machine)
    aggs = aggs.assign(end=to_epoch_ms(aggs["window_start"]) + MINUTE_MS)
    aggs = aggs.sort_values("end", kind="stable")
    history = history.sort_values("ts", kind="stable")
    rows, fed, told = [], 0, 0
    for i, t in enumerate(times):
        closed = aggs.iloc[fed : fed + int((aggs["end"].to_numpy()[fed:] <= t).sum())]
        fed += len(closed)
        if rng is not None:  # a batch of closed windows may come in any order
            closed = closed.iloc[rng.permutation(len(closed))]
        state.add(closed.drop(columns="end"))
        happened = history.iloc[told : told + int((history["ts"].to_numpy()[told:] <= t).sum())]
        told += len(happened)
        for kind, ts in zip(happened["kind"], happened["ts"], strict=True):
            state.add_history(kind, int(ts))
        if pickle_every and i % pickle_every == 0:  # a Bytewax snapshot and resume
            state = pickle.loads(pickle.dumps(state))
        rows.append(state.features(int(t)))
    return pd.DataFrame(rows, columns=list(FEATURE_NAMES))


def assert_same(offline: pd.DataFrame, online: pd.DataFrame) -> None:
    np.testing.assert_allclose(
        offline.loc[:, list(FEATURE_NAMES)].to_numpy(), online.to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True
    )


def test_the_spec_is_consistent() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    signal_names = {f.name for f in SIGNAL_FEATURES}
    assert all(set(d.inputs) <= signal_names for d in DERIVED_FEATURES)
    nan = {name: np.array([np.nan]) for name in signal_names}
    assert set(feature_module._derived(nan)) == {d.name for d in DERIVED_FEATURES}


def test_features_are_statistics_of_the_raw_readings() -> None:
    """Pooled mean/std, max, min, last over the minutes of a horizon equal those of the readings."""
    rng = np.random.default_rng(3)
    raw = raw_readings(rng, "m1", {"torque": 40.0, "air_temperature": 300.0, "process_temperature": 310.0}, 90)
    aggs = minute_aggs(raw)
    times = np.array([T0 + 70 * MINUTE_MS, T0 + 80 * MINUTE_MS + 12_345])
    got = offline_features(aggs, pd.DataFrame({"machine_id": "m1", "ts": times}))
    for row, t in zip(got.itertuples(), times, strict=True):
        end = t // MINUTE_MS * MINUTE_MS  # windows with window_end <= t
        for horizon, name in ((5, "torque_mean_5m"), (15, "torque_mean_15m"), (60, "torque_mean_60m")):
            r = raw[(raw.signal == "torque") & (raw.event_ts >= end - horizon * MINUTE_MS) & (raw.event_ts < end)]
            assert getattr(row, name) == pytest.approx(r.value.mean(), rel=1e-12)
        r15 = raw[(raw.signal == "torque") & (raw.event_ts >= end - 15 * MINUTE_MS) & (raw.event_ts < end)]
        assert row.torque_std_15m == pytest.approx(r15.value.std(ddof=0), rel=1e-9)
        r5 = raw[(raw.signal == "torque") & (raw.event_ts >= end - 5 * MINUTE_MS) & (raw.event_ts < end)]
        assert row.torque_max_5m == r5.value.max()
        assert row.torque_last == r15.sort_values("seq").value.iloc[-1]
        # The slope is the least-squares slope of the minute means, per minute.
        minutes = r15.groupby(r15.event_ts // MINUTE_MS).value.mean()
        slope = np.polyfit(minutes.index.to_numpy(dtype=float), minutes.to_numpy(), 1)[0]
        assert row.torque_slope_15m == pytest.approx(slope, rel=1e-6, abs=1e-12)
        margin = row.process_temp_last - row.air_temp_last
        assert row.temp_margin_last == pytest.approx(margin)
        assert np.isnan(row.tool_wear_last) and np.isnan(row.strain_last)  # this machine has no tool wear


def test_history_features_count_and_time_events() -> None:
    events = pd.DataFrame(
        {
            "machine_id": "m1",
            "ts": [T0 + m * MINUTE_MS for m in (10, 20, 30, 400, 470)],
            "event_type": ["MaintenanceStarted", "FaultRaised", "MachineStopped", "MachineStopped", "MachineStopped"],
            "reason": ["tool_change", "OSF", "failure:OSF", "off_shift", "starved"],
        }
    )
    history = history_from_events(events, alerts=pd.DataFrame({"machine_id": ["m1"], "ts": [T0 + 465 * MINUTE_MS]}))
    assert sorted(history.kind) == ["alert", "maintenance", "repair", "stop", "stop", "tool_change", "tool_change"]
    t = T0 + 480 * MINUTE_MS
    one_minute = pd.DataFrame([minute_row("torque", T0, 1.0) | {"machine_id": "m1"}])
    got = offline_features(one_minute, pd.DataFrame({"machine_id": ["m1"], "ts": [t]}), history).iloc[0]
    assert got.minutes_since_tool_change == 460  # the OSF repair fitted a new tool at minute 20
    assert got.minutes_since_repair == 460
    assert got.minutes_since_maintenance == 470
    assert got.stops_60m == 1 and got.stops_480m == 2  # off-shift stops are not stops
    assert got.alerts_60m == 1 and got.repairs_480m == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_offline_and_online_agree_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    signals = {s: float(rng.uniform(1, 400)) for s in FEATURE_SIGNALS if rng.random() < 0.7}
    raw = raw_readings(rng, "m1", signals, 200)
    aggs = minute_aggs(raw).to_pandas()
    # A provisional version of some windows (fewer readings) arrives too: the fuller one counts.
    provisional = aggs.sample(frac=0.1, random_state=seed).assign(count=1, mean=-5.0, max=-5.0, last=-5.0)
    aggs = pd.concat([provisional, aggs], ignore_index=True)
    kinds = ["tool_change", "repair", "maintenance", "stop", "alert"]
    history = pd.DataFrame(
        {
            "machine_id": "m1",
            "ts": np.sort(T0 + rng.integers(0, 200 * MINUTE_MS, 40)),
            "kind": rng.choice(kinds, 40),
        }
    )
    times = np.sort(T0 + rng.integers(0, 205 * MINUTE_MS, 120))
    offline = offline_features(aggs, pd.DataFrame({"machine_id": "m1", "ts": times}), history)
    online = online_at("m1", aggs, history, times, rng=rng, pickle_every=7)
    assert_same(offline, online)
    assert offline.loc[:, list(FEATURE_NAMES)].notna().to_numpy().sum() > 0.5 * offline.size - 2 * len(offline)


@pytest.fixture(scope="module")
def small_plant():
    """Eight machines (every type), ten simulated hours at the calibrated 5 s step."""
    return simulate_dataset(machines=8, days=10 / 24, seed=11, sample_period_s=5.0)


def test_offline_and_online_agree_on_the_simulated_plant(small_plant) -> None:
    ds = small_plant
    history = history_from_events(ds.machine_events)
    samples = sample_grid(ds.machine_events, ds.machines.machine_id.to_numpy(), ds.start_ms, ds.end_ms, every_min=3)
    offline = offline_features(ds.minute_aggregates, samples, history)
    aggs = ds.minute_aggregates.to_pandas()
    checked = 0
    for machine in ds.machines.machine_id:
        rows = offline.machine_id == machine
        online = online_at(machine, aggs[aggs.machine_id == machine], history[history.machine_id == machine],
                           offline.loc[rows, "ts"].to_numpy())  # fmt: skip
        assert_same(offline.loc[rows].reset_index(drop=True), online)
        checked += int(rows.sum())
    assert checked > 8 * 100
    # Signals missing by machine type are NaN, present ones are not (once there is data).
    types = dict(zip(ds.machines.machine_id, ds.machines.machine_type, strict=True))
    offline = offline[offline.ts >= ds.start_ms + 15 * MINUTE_MS]
    kind = offline.machine_id.map(types)
    assert offline.loc[kind == "cnc_mill", "tool_wear_last"].notna().all()
    assert offline.loc[kind == "press", "tool_wear_last"].isna().all()
    assert offline.loc[kind == "conveyor", "temp_margin_last"].isna().all()
    assert offline.loc[kind == "press", "temp_margin_last"].notna().all()


def test_online_state_is_bounded_and_refuses_what_it_no_longer_has() -> None:
    rng = np.random.default_rng(5)
    state = OnlineFeatures("m1")
    sizes = []
    for minute in range(3 * 24 * 60):
        start = T0 + minute * MINUTE_MS
        state.add([minute_row("torque", start, rng.normal(40, 5)), minute_row("vibration", start, rng.normal(2, 0.2))])
        if minute % 7 == 0:
            state.add_history("stop", T0 + minute * MINUTE_MS)
        if minute in (3 * 60, 3 * 24 * 60 - 1):
            sizes.append(len(pickle.dumps(state)))
    assert sizes[1] <= sizes[0] * 1.05, sizes  # flat: three hours and three days hold the same
    now = T0 + 3 * 24 * 60 * MINUTE_MS
    assert state.features(now)["stops_480m"] == pytest.approx(480 / 7, abs=1)
    with pytest.raises(ValueError, match="left the ring"):
        state.features(now - 30 * MINUTE_MS)
    assert state.add([minute_row("torque", T0, 1.0)]) == 0  # long gone from the ring
    assert state.dropped_rows == 1


@pytest.mark.parametrize("period_s", [1.0, 5.0])
def test_simulated_minute_aggregates_equal_window_aggregates_of_the_engine(period_s: float) -> None:
    """The fast accumulator (readings as arrays) equals the stock engine's telemetry, aggregated."""
    machines, minutes, seed = 5, 12, 7
    ds = simulate_dataset(machines=machines, days=minutes / 1440, seed=seed, sample_period_s=period_s)
    sim = PlantSimulator(simulation_plant(machines, seed=seed, sample_period_s=period_s), T0, None, seed=seed,
                         faults=False)  # fmt: skip
    counter = itertools.count()
    rows: dict[str, list] = {"machine_id": [], "signal": [], "seq": [], "event_ts": [], "value": []}
    for _ in range(round(minutes * 60 / period_s)):
        for t in snapshot_telemetry(sim.step(), lambda _m: next(counter)):
            if t.signal in FEATURE_SIGNALS:
                for key, value in zip(rows, (t.machine_id, t.signal, t.seq, t.event_ts, t.value), strict=True):
                    rows[key].append(value)
    expected = sort_aggregates(window_aggregates(pa.table(rows), 60))
    got = sort_aggregates(ds.minute_aggregates)
    assert got.schema == expected.schema and got.num_rows == expected.num_rows > machines * 5 * minutes
    for name in expected.column_names:
        a, b = expected.column(name).to_numpy(), got.column(name).to_numpy()
        if a.dtype.kind == "f":
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-10)  # summation order only
        else:
            np.testing.assert_array_equal(b, a)
