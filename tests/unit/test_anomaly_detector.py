"""The per-series anomaly detector: each rule, hysteresis, determinism under batch cuts, state.

The vectorised hysteresis is checked against a plain sequential state machine; the whole
detector is checked to give identical transitions and snapshots whether a series arrives
in one batch, in random cuts, event by event, or interleaved with other series in one bank.
"""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantstream.contract.events import AlertType, Severity
from plantstream.domain.anomaly import (
    DEFAULT_LIMITS,
    BaselineConfig,
    DetectorBank,
    DetectorConfig,
    DriftConfig,
    Limits,
    LimitTable,
    SeriesDetector,
    Transition,
    _hysteresis,
    alert_id,
    default_config,
    detect_many,
    limits_only,
    paired_difference,
)

T0 = 1_772_000_000_000
SMALL = BaselineConfig(block_size=8, history_blocks=4)  # warm after 32 samples: short property-test series
SMALL_DRIFT = DriftConfig(direction="both", slack=0.5, threshold=4.0, long_blocks=10, warmup_blocks=3)


def noisy(n: int, seed: int = 0, level: float = 40.0, sd: float = 1.0) -> np.ndarray:
    return level + np.random.default_rng(seed).normal(0, sd, n)


def ts_of(n: int, start: int = 0) -> np.ndarray:
    return T0 + (start + np.arange(n)) * 1000


def raises(transitions: list[Transition], kind: str | None = None) -> list[Transition]:
    return [t for t in transitions if t.action == "raise" and (kind is None or t.kind == kind)]


def clears(transitions: list[Transition], kind: str | None = None) -> list[Transition]:
    return [t for t in transitions if t.action == "clear" and (kind is None or t.kind == kind)]


# -- rules -------------------------------------------------------------------------------


def test_spike_raises_once_and_clears_once_with_evidence() -> None:
    x = noisy(1_000)
    x[700] = 200.0
    det = SeriesDetector(DetectorConfig(limits=Limits()), signal="torque")
    result = det.update_batch(ts_of(1_000), x, running=np.ones(1_000, bool))
    spikes = [t for t in result.transitions if t.kind == "spike"]
    assert [t.action for t in spikes] == ["raise", "clear"]
    raise_, clear = spikes
    assert raise_.ts_ms == raise_.evidence.first_ts_ms == raise_.evidence.last_ts_ms == ts_of(1_000)[700]
    assert raise_.evidence.value == 200.0
    assert raise_.evidence.statistic > 10.0  # a strong single sample: raised at once
    assert raise_.evidence.reference == pytest.approx(40.0, abs=1.0)
    assert raise_.severity is Severity.CRITICAL
    assert clear.ts_ms == ts_of(1_000)[705]  # clear_after=5 normal samples
    assert clear.raised_at_ms == raise_.ts_ms and clear.alert_id == raise_.alert_id
    assert result.anomalous[700] and result.anomalous.sum() == 1
    assert result.scores[700] == raise_.evidence.statistic


def test_level_shift_is_one_alert_not_a_storm() -> None:
    x = noisy(1_500)
    x[800:1_000] += 20.0  # twenty sigma for 200 samples: anomalous until the baseline has moved
    det = SeriesDetector(DetectorConfig(limits=Limits(), drift=None), signal="torque")
    result = det.update_batch(ts_of(1_500), x, running=np.ones(1_500, bool))
    spikes = [t for t in result.transitions if t.kind == "spike"]
    during = [t for t in spikes if ts_of(1_500)[800] <= t.ts_ms < ts_of(1_500)[1_000]]
    assert [t.action for t in during] == ["raise", "clear"]  # one alert while the shift lasts, however long
    assert during[0].ts_ms == ts_of(1_500)[800] and during[1].evidence.samples > 1
    assert len(raises(spikes)) == len(clears(spikes)) <= 2  # at most one more when the level drops back


def test_stuck_needs_the_machine_running_and_repeats() -> None:
    n = 1_000
    x = noisy(n)
    x[500:560] = x[500]  # stuck for 60 samples while running
    x[700:800] = 0.0  # stopped: torque legitimately 0
    running = np.ones(n, bool)
    running[700:800] = False
    det = SeriesDetector(DetectorConfig(stuck_samples=10, zscore=False, drift=None), signal="torque")
    result = det.update_batch(ts_of(n), x, running=running)
    stuck = [t for t in result.transitions if t.kind == "stuck"]
    assert [t.action for t in stuck] == ["raise", "clear"]
    assert stuck[0].ts_ms == ts_of(n)[510]  # the 10th repeat
    assert stuck[0].evidence.first_ts_ms == ts_of(n)[501] and stuck[0].evidence.samples == 10
    assert stuck[0].evidence.value == x[500]
    assert stuck[1].ts_ms == ts_of(n)[564]  # 5 changing samples after the fault
    assert stuck[1].evidence.samples == 59


def test_stuck_without_running_flag_fires_on_a_stop() -> None:
    """Why callers pass ``running``: without it, a stopped drive's zeros look stuck."""
    n = 400
    x = noisy(n)
    x[300:] = 0.0
    det = SeriesDetector(DetectorConfig(zscore=False, drift=None), signal="torque")
    assert raises(det.update_batch(ts_of(n), x).transitions, "stuck")


def test_never_varying_signal_is_not_stuck() -> None:
    det = SeriesDetector(DetectorConfig(zscore=False, drift=None), signal="pressure")
    assert det.update_batch(ts_of(500), np.full(500, 5.0), running=np.ones(500, bool)).transitions == []


def test_dropout_and_stale() -> None:
    n = 100
    x = noisy(n)
    quality = np.array(["good"] * n, dtype=object)
    x[20:22] = np.nan  # two missing: below dropout_samples=3
    x[40:50] = np.nan
    quality[40:50] = "bad"
    x[70] = np.nan
    quality[70] = "stale"
    det = SeriesDetector(DetectorConfig(zscore=False, stuck_samples=None), signal="torque")
    result = det.update_batch(ts_of(n), x, quality)
    kinds = [(t.kind, t.action, (t.ts_ms - T0) // 1000) for t in result.transitions]
    assert kinds == [
        ("dropout", "raise", 42),
        ("dropout", "clear", 54),
        ("stale", "raise", 70),
        ("stale", "clear", 75),
    ]
    assert result.transitions[0].evidence.value is None and result.transitions[0].evidence.samples == 3
    assert result.transitions[1].evidence.samples == 10
    assert result.transitions[2].alert_type is AlertType.MACHINE_STALE


def test_limits_low_only_while_running_and_rate() -> None:
    n = 60
    x = noisy(n, sd=0.1)
    running = np.ones(n, bool)
    x[10] = 95.0  # over the high limit
    x[30:40] = 0.0  # stopped: below the low limit, but legitimately
    running[30:40] = False
    x[50:53] = 2.0  # running and below the low limit
    det = SeriesDetector(DetectorConfig(zscore=False, stuck_samples=None, limits=Limits(low=5, high=90)))
    result = det.update_batch(ts_of(n), x, running=running)
    lim = [(t.action, (t.ts_ms - T0) // 1000, t.evidence.threshold) for t in result.transitions]
    assert lim == [("raise", 10, 90.0), ("clear", 15, 90.0), ("raise", 50, 5.0), ("clear", 57, 5.0)]
    assert result.transitions[0].evidence.statistic == pytest.approx(5.0, abs=0.5)

    wear = np.arange(40) * 0.0667
    wear[20] = 500.0  # a spike on a counter: caught by its rate limit
    wear[30:] = np.arange(10) * 0.0667  # a new tool: falling is allowed
    det = SeriesDetector(default_config("cnc_mill", "tool_wear"), signal="tool_wear")
    result = det.update_batch(ts_of(40), wear, running=np.ones(40, bool))
    assert [(t.kind, t.action, (t.ts_ms - T0) // 1000) for t in result.transitions] == [
        ("limit", "raise", 20),
        ("rate", "raise", 20),
        ("limit", "clear", 25),
        ("rate", "clear", 25),
    ]


def test_drift_catches_a_slow_rise_and_clears() -> None:
    n = 9_000
    x = noisy(n, sd=0.3, level=2.0)
    x[6_000:7_500] += np.linspace(0, 5, 1_500)  # vibration creeping up over 25 minutes
    running = np.ones(n, bool)
    running[7_500:7_620] = False  # a tool change
    x[7_500:7_620] = 0.2
    x[7_620:] = noisy(n - 7_620, seed=1, sd=0.3, level=2.0)  # the new tool
    det = SeriesDetector(default_config("cnc_mill", "vibration"), signal="vibration")
    result = det.update_batch(ts_of(n), x, running=running)
    drift = [t for t in result.transitions if t.kind == "drift"]
    assert [t.action for t in drift] == ["raise", "clear"]
    assert 6_000 < (drift[0].ts_ms - T0) // 1000 < 7_500
    assert drift[0].evidence.statistic >= 12.0 and drift[0].evidence.reference == pytest.approx(2.0, abs=0.2)
    assert drift[0].alert_type is AlertType.MAINTENANCE_REQUIRED
    assert not raises(result.transitions, "spike")  # a slow rise is not a spike


def test_restart_grace_and_ambient_signals() -> None:
    n = 1_200
    x = noisy(n)
    running = np.ones(n, bool)
    running[600:700] = False
    x[600:700] = 0.0
    x[700:] += 15.0  # after the stop the machine runs at another load: legitimate
    det = SeriesDetector(DetectorConfig(limits=Limits(), drift=None), signal="torque")
    assert det.update_batch(ts_of(n), x, running=running).transitions == []
    # air temperature ignores the running flag (ambient): a spike while stopped is judged
    air = noisy(n, level=300.0, sd=0.2)
    air[650] = 320.0
    det = SeriesDetector(default_config("cnc_mill", "air_temperature"), signal="air_temperature")
    result = det.update_batch(ts_of(n), air, running=running)
    assert {t.kind for t in raises(result.transitions)} == {"spike", "limit"}


def test_update_and_decision() -> None:
    det = SeriesDetector(DetectorConfig(zscore=False), machine_id="m", signal="torque")
    for i in range(5):
        d = det.update(T0 + i * 1000, 40.0 + i, running=True)
        assert d.transitions == () and not d.anomalous and math.isnan(d.score)
    decisions = [det.update(T0 + (5 + i) * 1000, None, quality="bad", running=True) for i in range(3)]
    assert [len(d.transitions) for d in decisions] == [0, 0, 1]
    assert all(d.anomalous for d in decisions) and decisions[-1].active == {"dropout"}
    assert det.active == frozenset({"dropout"})


def test_alert_id_is_deterministic() -> None:
    a = alert_id("m1", "torque", "spike", 1)
    assert a == alert_id("m1", "torque", "spike", 1) and len(a) == 32
    assert len({a, alert_id("m1", "torque", "spike", 2), alert_id("m1", "torque", "stuck", 1)}) == 3


def test_limit_table_refuses_impossible_limits_and_resolves_by_type() -> None:
    with pytest.raises(ValueError, match="outside the valid range"):
        LimitTable(common={"vibration": Limits(high=150.0)})  # valid range is 0-100 mm/s
    assert DEFAULT_LIMITS.for_series("press", "power").high == 25.0
    assert DEFAULT_LIMITS.for_series("cnc_mill", "power").high == 20.0
    assert DEFAULT_LIMITS.for_series(None, "unknown_signal") == Limits()
    base = limits_only(default_config("cnc_mill", "tool_wear"))
    assert base.limits == Limits(high=250.0) and not base.zscore and base.stuck_samples is None
    assert DetectorConfig.from_dict(default_config("cnc_mill", "vibration").to_dict()) == default_config(
        "cnc_mill", "vibration"
    )
    with pytest.raises(ValueError):
        DetectorConfig(z_clear=9, z_threshold=8)


def test_paired_difference_takes_the_worse_quality() -> None:
    value, quality = paired_difference(
        np.array([310.0, 310.0, 310.0]), np.array(["good", "bad", "good"]), np.array([300.0, 300.0, 300.0]), None
    )
    assert value[0] == 10.0 and math.isnan(value[1]) and quality.tolist() == [0, 2, 0]


# -- the vectorised hysteresis against a sequential reference ------------------------------------


def reference_hysteresis(
    cls: list[int], strong: list[bool], k: int, m: int, state: tuple[bool, int, int]
) -> tuple[list[tuple[int, str]], tuple[bool, int, int]]:
    """The textbook machine: raise after k anomalous in a row (or a strong one), clear after m normal."""
    active, arun, nrun = state
    out = []
    for i, (c, s) in enumerate(zip(cls, strong, strict=True)):
        if c == 1:
            arun, nrun = arun + 1, 0
            if not active and (arun >= k or s):
                active = True
                out.append((i, "raise"))
        else:
            arun, nrun = 0, nrun + 1
            if active and nrun >= m:
                active = False
                out.append((i, "clear"))
    return out, (active, 0 if active else arun, nrun if active else 0)


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.lists(st.tuples(st.integers(0, 1), st.booleans()), min_size=1, max_size=40), st.integers(0, 4)),
        min_size=1,
        max_size=4,
    ),
    k=st.integers(1, 4),
    m=st.integers(1, 4),
    carried=st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 3)), min_size=4, max_size=4),
)
def test_hysteresis_matches_the_sequential_machine(data, k, m, carried) -> None:
    slots, cls, strong = [], [], []
    for slot, (samples, _) in enumerate(data):
        slots += [slot] * len(samples)
        cls += [c for c, _ in samples]
        strong += [s for _, s in samples]
    # carried state as the detector keeps it: inactive -> arun < k, nrun 0; active -> arun 0, nrun < m
    states = [(a, 0 if a else min(ar, k - 1), min(nr, m - 1) if a else 0) for a, ar, nr in carried]
    active0 = np.array([s[0] for s in states])
    h = _hysteresis(
        np.array(slots),
        np.array(cls, dtype=np.int8),
        strong=np.array(strong),
        k=np.full(4, k),
        m=np.full(4, m),
        active0=active0,
        arun0=np.array([s[1] for s in states]),
        nrun0=np.array([s[2] for s in states]),
    )
    got = sorted([(int(i), "raise") for i in h.raises] + [(int(i), "clear") for i in h.clears])
    want = []
    offset = 0
    for slot, (samples, _) in enumerate(data):
        out, _ = reference_hysteresis([c for c, _ in samples], [s for _, s in samples], k, m, states[slot])
        want += [(offset + i, what) for i, what in out]
        offset += len(samples)
    assert got == want


# -- determinism: batch cuts, event by event, many series in one bank ---------------------------


def faulty_series(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A noisy signal with every kind of trouble at random places (so every rule fires sometimes)."""
    rng = np.random.default_rng(seed)
    x = 40 + rng.normal(0, 1, n) + np.cumsum(rng.normal(0, 0.05, n))
    q = np.zeros(n, dtype=np.int8)
    running = np.ones(n, dtype=np.int8)
    for _ in range(rng.integers(3, 8)):
        at, length = int(rng.integers(0, n)), int(rng.integers(1, 30))
        kind = rng.integers(0, 7)
        if kind == 0:
            x[at] *= 5
        elif kind == 1:
            x[at : at + length] = x[at]
        elif kind == 2:
            x[at : at + length] = np.nan
            q[at : at + length] = 2
        elif kind == 3:
            x[at] = np.nan
            q[at] = 3
        elif kind == 4:
            x[at : at + length] = 0.0
            running[at : at + length] = 0
        elif kind == 5:
            x[at : at + length] += rng.normal(0, 20)
        else:
            x[at:] += np.linspace(0, 8, n - at)
    return ts_of(n), x, q, running


def small_config() -> DetectorConfig:
    return DetectorConfig(
        limits=Limits(low=5.0, high=120.0, max_rise_per_s=60.0),
        drift=SMALL_DRIFT,
        stuck_samples=5,
        restart_grace=8,
    )


def feed_in_cuts(det: SeriesDetector, cuts: list[int], arrays: tuple[np.ndarray, ...]) -> list[Transition]:
    n = len(arrays[0])
    bounds = [0, *sorted({c % n for c in cuts if c % n > 0}), n]
    out: list[Transition] = []
    for i, j in itertools.pairwise(bounds):
        ts, x, q, run = (a[i:j] for a in arrays)
        out += det.update_batch(ts, x, q, run).transitions
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 10_000), max_size=30))
def test_batch_cuts_never_change_transitions_or_state(seed, cuts) -> None:
    arrays = faulty_series(seed, 600)
    whole = SeriesDetector(small_config(), machine_id="m", signal="s", baseline=SMALL)
    expected = whole.update_batch(*arrays).transitions
    cut = SeriesDetector(small_config(), machine_id="m", signal="s", baseline=SMALL)
    assert feed_in_cuts(cut, cuts, arrays) == expected
    assert cut.snapshot() == whole.snapshot()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_event_by_event_equals_one_batch(seed) -> None:
    ts, x, q, run = faulty_series(seed, 300)
    whole = SeriesDetector(small_config(), machine_id="m", signal="s", baseline=SMALL)
    expected = whole.update_batch(ts, x, q, run).transitions
    single = SeriesDetector(small_config(), machine_id="m", signal="s", baseline=SMALL)
    names = ["good", "uncertain", "bad", "stale"]
    got: list[Transition] = []
    for i in range(len(ts)):
        value = None if math.isnan(x[i]) else float(x[i])
        got += single.update(int(ts[i]), value, quality=names[q[i]], running=bool(run[i])).transitions
    assert got == expected
    assert single.snapshot() == whole.snapshot()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 10_000), max_size=20))
def test_many_series_in_one_bank_equal_each_series_alone(seed, cuts) -> None:
    series = [faulty_series(seed + i, 400) for i in range(4)]
    expected: list[Transition] = []
    for i, arrays in enumerate(series):
        expected += (
            SeriesDetector(small_config(), machine_id=f"m{i}", signal="s", baseline=SMALL)
            .update_batch(*arrays)
            .transitions
        )
    # interleave the series as a Kafka partition would (time order, series mixed), cut anywhere
    rng = np.random.default_rng(seed)
    code = np.concatenate([np.full(400, i) for i in range(4)])
    order = np.lexsort((rng.random(len(code)), np.concatenate([s[0] for s in series])))
    cols = [np.concatenate([s[c] for s in series])[order] for c in range(4)]
    code = code[order]
    bank = DetectorBank(SMALL)
    for i in range(4):
        bank.add(f"m{i}", "s", small_config())
    bounds = [0, *sorted({c % len(code) for c in cuts if c % len(code)}), len(code)]
    got: list[Transition] = []
    for i, j in itertools.pairwise(bounds):
        got += bank.update_batch(code[i:j], *(c[i:j] for c in cols)).transitions
    key = lambda t: (t.machine_id, t.ts_ms, t.kind, t.action)  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)


def test_batch_output_is_in_input_order() -> None:
    bank = DetectorBank()
    codes = bank.codes(["a", "b", "a", "b"], ["torque"] * 4)
    assert codes.tolist() == [0, 1, 0, 1]
    result = bank.update_batch(codes, [T0, T0, T0 + 1000, T0 + 1000], [None, 40.0, None, 200.0])
    assert result.anomalous.tolist() == [True, False, True, True]  # dropout samples and a limit crossing
    named = detect_many(bank, ["b"], ["torque"], np.array([T0 + 2000]), np.array([41.0]))
    assert named.anomalous.tolist() == [False] and len(bank) == 2


# -- state -----------------------------------------------------------------------------------------


def test_snapshot_restore_continues_identically_and_is_bounded() -> None:
    ts, x, q, run = faulty_series(3, 3_000)
    config = default_config("cnc_mill", "torque")
    whole = SeriesDetector(config, machine_id="m", signal="torque")
    expected = whole.update_batch(ts, x, q, run).transitions
    first = SeriesDetector(config, machine_id="m", signal="torque")
    got = first.update_batch(ts[:1_777], x[:1_777], q[:1_777], run[:1_777]).transitions
    restored = SeriesDetector.from_snapshot(pickle.loads(pickle.dumps(first.snapshot())))
    got += restored.update_batch(ts[1_777:], x[1_777:], q[1_777:], run[1_777:]).transitions
    assert got == expected and restored.snapshot() == whole.snapshot()
    # bounded: the snapshot of a series 10x longer holds exactly as many numbers
    longer = SeriesDetector(config, machine_id="m", signal="torque")
    for i in range(10):
        longer.update_batch(ts + i * 3_000_000, x, q, run)
    states = [d.snapshot()["series"][0]["state"] for d in (whole, longer)]
    assert states[0].keys() == states[1].keys()
    assert max(_numbers(s) for s in states) <= 150  # docs/anomaly.md: at most ~140 numbers per series
    assert len(pickle.dumps(longer.snapshot())) < 4_000


def test_bank_snapshot_roundtrip_and_config_refresh() -> None:
    bank = DetectorBank()
    codes = bank.codes(["m1", "m2"], ["torque", "vibration"])
    bank.update_batch(codes, [T0, T0], [40.0, 2.0])
    snap = bank.snapshot()
    again = DetectorBank.from_snapshot(snap)
    assert again.snapshot() == snap and again.keys == [("m1", "torque"), ("m2", "vibration")]
    refreshed = DetectorBank.from_snapshot(snap, lambda m, s: DetectorConfig(z_threshold=9.0), keep_configs=False)
    assert refreshed.config(0).z_threshold == 9.0
    with pytest.raises(ValueError, match="unknown series code"):
        bank.update_batch([5], [T0], [1.0])


def _numbers(state: dict) -> int:
    return sum(len(v) if isinstance(v, list) else 1 for v in state.values())
