"""Scoring alerts against ground truth: the matching rule on hand-made cases, then the offline
evaluation of the anomaly detector (and the limits-only baseline) on a faulty simulated plant.

The evaluation steps :class:`PlantSimulator` directly (no services): 50 machines for two
simulated hours at 1 s in the default tier, six hours in the slow tier (another seed).
The floors below are well under what was measured (docs/anomaly.md, "Measured") but far
above what the baseline or a broken detector achieves, so they fail when detection breaks.
"""

from __future__ import annotations

import pytest

from plantstream.domain.alert_scoring import (
    AlertRecord,
    MatchingRules,
    Scorecard,
    SimulatedTelemetry,
    alerts_from_transitions,
    evaluate,
    evaluation_plant,
    score_alerts,
    simulate_telemetry,
)
from plantstream.domain.anomaly import SeriesDetector, default_config, limits_only
from plantstream.simulator.ground_truth import GroundTruthEntry

MIN = 60_000
START = 1_772_000_000_000
END = START + 120 * MIN
RULES = MatchingRules(tolerance_ms=30_000, horizon_ms=10 * MIN, settle_ms=2 * MIN, warmup_ms=10 * MIN, tail_ms=MIN)


def gt(minute: float, kind: str, mode: str, machine: str = "m1", signal: str = "", duration_s: float = 0.0):
    return GroundTruthEntry(
        ts=START + round(minute * MIN), machine_id=machine, kind=kind, mode=mode, duration_s=duration_s, signal=signal
    )


def alert(minute: float, kind: str, signal: str = "torque", machine: str = "m1") -> AlertRecord:
    return AlertRecord(machine, signal, kind, START + round(minute * MIN))


def score(alerts: list[AlertRecord], truth: list[GroundTruthEntry], **kw) -> Scorecard:
    return score_alerts(alerts, truth, start_ms=START, end_ms=END, rules=RULES, **kw)


# -- the matching rule ------------------------------------------------------------------------


def test_sensor_faults_match_same_machine_signal_kind_within_tolerance() -> None:
    truth = [
        gt(20, "sensor_fault", "stuck", signal="torque", duration_s=300),
        gt(40, "sensor_fault", "spike", signal="vibration"),
        gt(60, "sensor_fault", "dropout", signal="power", duration_s=60),
    ]
    alerts = [
        alert(20 + 10 / 60, "stuck"),  # 10 s after the fault started
        alert(25.4, "stuck"),  # after the end but within the tolerance: a second true alert
        alert(40, "spike", signal="torque"),  # wrong signal: false
        alert(40, "limit", signal="vibration"),  # a limit alert detects a spike
        alert(62, "dropout", signal="power"),  # 1 minute after the end: too late
    ]
    card = score(alerts, truth)
    assert card.faults["stuck"].to_dict() == {"faults": 1, "detected": 1, "recall": 1.0, "median_s": 10.0}
    assert card.faults["spike"].detected == 1 and card.faults["spike"].median_s == 0.0
    assert card.faults["dropout"].detected == 0 and card.faults["dropout"].recall == 0.0
    assert card.alerts["stuck"].true == 2 and card.alerts["stuck"].precision == 1.0
    assert card.alerts["spike"].false == 1 and card.alerts["spike"].precision == 0.0
    assert card.alerts["limit"].true == 1 and card.alerts["dropout"].false == 1
    assert card.precision == 3 / 5


def test_derived_signal_and_offline_and_upstream() -> None:
    truth = [
        gt(20, "sensor_fault", "stuck", signal="process_temperature", duration_s=300),
        gt(30, "device_fault", "offline", machine="m2", duration_s=60),
        gt(50, "sensor_fault", "spike", signal="air_temperature"),
    ]
    alerts = [
        alert(21, "stuck", signal="temperature_difference"),
        *[alert(30.05, "stale", signal=s, machine="m2") for s in ("torque", "power")],
    ]
    card = score(alerts, truth, caught_upstream=[("m1", "air_temperature", START + 50 * MIN)])
    assert card.faults["stuck"].detected == 1
    assert card.faults["offline"].to_dict() == {"faults": 1, "detected": 1, "recall": 1.0, "median_s": 3.0}
    assert card.alerts["stale"].true == 2
    assert card.faults["spike"].faults == 0 and card.not_scored["spike:caught_by_validation"] == 1


def test_precursors_horizon_modes_and_exclusions() -> None:
    truth = [
        gt(30, "failure", "TWF", duration_s=300),
        gt(60, "failure", "HDF", duration_s=360),
        gt(90, "maintenance", "tool_change", duration_s=120),
        gt(100, "planned_downtime", "cleaning", duration_s=900),
    ]
    alerts = [
        alert(26, "drift", signal="vibration"),  # 4 min before the TWF: lead 240 s
        alert(18, "drift", signal="vibration"),  # 12 min before: outside the horizon -> false
        alert(55, "drift", signal="vibration"),  # before the HDF, but vibration does not announce HDF -> false
        alert(57, "limit", signal="temperature_difference"),  # a limit alert as an HDF precursor
        alert(32, "spike", signal="torque"),  # during the TWF repair: excluded
        alert(37.5, "spike", signal="torque"),  # repair (5 min) + settle (2 min) over: false
        alert(85, "drift", signal="vibration"),  # before a preventive tool change: excluded
        alert(105, "spike", signal="torque"),  # planned downtime: excluded
        alert(5, "spike", signal="torque"),  # warm-up: not scored
    ]
    card = score(alerts, truth)
    assert card.failure_modes["TWF"].to_dict() == {"faults": 1, "detected": 1, "recall": 1.0, "median_s": 240.0}
    assert card.failure_modes["HDF"].detected == 1 and card.failure_modes["HDF"].median_s == 180.0
    assert card.faults["failure"].recall == 1.0
    drift = card.alerts["drift"]
    assert (drift.alerts, drift.true, drift.false, drift.excluded) == (4, 1, 2, 1)
    assert 0 < drift.chance_precision < 0.3  # 10 of the 110 scored minutes precede a TWF
    spike = card.alerts["spike"]
    assert (spike.alerts, spike.true, spike.false, spike.excluded) == (3, 0, 1, 2)
    assert card.not_scored["alert:spike:outside_scored_time"] == 1


def test_alerts_from_transitions_pairs_raise_and_clear() -> None:
    det = SeriesDetector(machine_id="m1", signal="torque")
    out = []
    for i in range(12):  # four missing values (raise at the third), then five valid ones (clear at the fifth)
        out += det.update(START + i * 1000, None if 2 <= i < 6 else 40.0 + i, quality="good").transitions
    assert alerts_from_transitions(out) == [AlertRecord("m1", "torque", "dropout", START + 4000, START + 10_000)]
    assert alerts_from_transitions(out[:1]) == [AlertRecord("m1", "torque", "dropout", START + 4000, None)]


# -- offline evaluation on a faulty simulated plant -------------------------------------------------


def _run(machines: int, hours: float, seed: int) -> tuple[SimulatedTelemetry, Scorecard, Scorecard]:
    telemetry = simulate_telemetry(evaluation_plant(machines, hours=hours, seed=seed), hours=hours)
    detector, _ = evaluate(telemetry, default_config)
    baseline, _ = evaluate(telemetry, lambda machine_type, signal: limits_only(default_config(machine_type, signal)))
    return telemetry, detector, baseline


@pytest.fixture(scope="module")
def two_hours() -> tuple[SimulatedTelemetry, Scorecard, Scorecard]:
    return _run(50, 2.0, seed=7)


def check_floors(detector: Scorecard, baseline: Scorecard) -> None:
    faults = detector.faults
    for kind, least in (("spike", 40), ("stuck", 15), ("dropout", 15), ("offline", 10), ("failure", 100)):
        assert faults[kind].faults >= least, f"too few {kind} faults to judge ({faults[kind].faults})"
    # sensor faults: the detector sees what fixed limits cannot
    assert detector.recall("spike") >= max(0.9, baseline.recall("spike") + 0.03)
    for kind in ("stuck", "dropout"):
        assert detector.recall(kind) >= 0.85 and detector.recall(kind) - baseline.recall(kind) >= 0.7
    assert detector.recall("offline") >= 0.95
    for kind in ("spike", "stuck", "dropout", "stale"):
        assert detector.alerts[kind].precision >= 0.85, (kind, detector.alerts[kind].to_dict())
    assert faults["spike"].median_s <= 1.0
    assert faults["stuck"].median_s <= 15.0  # stuck_samples = 10 at 1 Hz
    assert faults["dropout"].median_s <= 5.0
    assert faults["offline"].median_s <= 6.0  # the gateway's staleness delay is 3 s
    # failure precursors: far better than chance, and than the limits alone
    drift = detector.alerts["drift"]
    assert drift.precision >= 2 * drift.chance_precision
    assert detector.recall("failure") >= 1.5 * baseline.recall("failure")
    wear = [detector.failure_modes[m] for m in ("TWF", "OSF")]
    assert sum(m.detected for m in wear) / sum(m.faults for m in wear) >= 0.5
    assert detector.faults["failure"].median_s >= 60.0  # a lead, not a reaction
    assert detector.precision >= 0.65


def test_detector_beats_the_limits_baseline_on_a_faulty_plant(two_hours) -> None:
    telemetry, detector, baseline = two_hours
    assert len({m for m, _, _ in telemetry.series}) == 50 and len(telemetry) > 2_000_000
    check_floors(detector, baseline)
    # the baseline raises only limit alerts, and they are the detector's limit alerts too
    assert set(baseline.alerts) == {"limit"}
    assert baseline.alerts["limit"].alerts == detector.alerts["limit"].alerts


@pytest.mark.slow
def test_six_hours_another_seed() -> None:
    _, detector, baseline = _run(50, 6.0, seed=11)
    check_floors(detector, baseline)
