"""Labels, the time split, the metrics, the training and the baseline; small and full simulated runs.

The default tier trains on two simulated days of 20 machines (well under a minute);
the slow tier runs the full evaluation (three weeks, 50 machines) and checks the
figures docs/predictive-maintenance.md reports.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import skops.io

from plantstream.models.baseline import MaintenanceRule, evaluate_baselines, tune_rule
from plantstream.models.evaluation import evaluate_on_simulation, training_frame
from plantstream.models.features import FEATURE_NAMES, MINUTE_MS
from plantstream.models.labels import failure_episodes, label_samples, sample_grid
from plantstream.models.sim_dataset import DEFAULT_START_MS, failure_rates, simulate_dataset
from plantstream.models.training import (
    SKOPS_TRUSTED_TYPES,
    TrainingConfig,
    choose_threshold,
    classification_metrics,
    lead_time_summary,
    lead_times,
    time_split,
    train_failure_model,
)

T0 = DEFAULT_START_MS


def minutes(*values: float) -> list[int]:
    return [T0 + round(v * MINUTE_MS) for v in values]


def test_sample_grid_keeps_producing_times_only() -> None:
    events = pd.DataFrame(
        {
            "ts": minutes(12, 20, 31),
            "machine_id": ["a", "a", "b"],
            "event_type": ["MachineStopped", "MachineStarted", "MaintenanceStarted"],
            "state": ["stopped", "running", "maintenance"],
            "reason": ["failure:HDF", "", "tool_change"],
        }
    )
    grid = sample_grid(events, ["a", "b", "c"], T0, T0 + 40 * MINUTE_MS, every_min=5)
    by = grid.groupby("machine_id").ts.apply(lambda t: ((t - T0) // MINUTE_MS).tolist()).to_dict()
    assert by["a"] == [0, 5, 10, 20, 25, 30, 35, 40]  # stopped 12-20; an event at 20 has taken effect
    assert by["b"] == [0, 5, 10, 15, 20, 25, 30]
    assert by["c"] == [0, 5, 10, 15, 20, 25, 30, 35, 40]  # no events: producing throughout


def test_labels_next_failure_within_horizon_and_drop_downtime() -> None:
    truth = pd.DataFrame(
        {
            "ts": minutes(30, 30, 100, 60),
            "machine_id": ["a", "a", "a", "a"],
            "kind": ["failure", "failure", "failure", "planned_downtime"],
            "mode": ["OSF", "TWF", "HDF", "cleaning"],
            "duration_s": [300.0, 120.0, 360.0, 1800.0],
        }
    )
    samples = pd.DataFrame({"machine_id": "a", "ts": minutes(5, 19.5, 20, 29, 32, 36, 70, 95, 120)})
    got = label_samples(samples, truth, horizon_min=10)
    assert ((got.ts - T0) / MINUTE_MS).tolist() == [5, 19.5, 20, 29, 36, 95, 120]  # 32: repair; 70: downtime
    assert got.label.tolist() == [0, 0, 1, 1, 0, 1, 0]
    assert got.failure_mode.tolist() == ["TWF+OSF", "TWF+OSF", "TWF+OSF", "TWF+OSF", "HDF", "HDF", ""]
    assert got.minutes_to_failure.tolist()[:4] == [25, 10.5, 10, 1]
    assert np.isnan(got.minutes_to_failure.iloc[-1])
    kept = label_samples(samples, truth, horizon_min=10, drop_planned_downtime=False)
    assert len(kept) == len(got) + 1
    assert failure_episodes(truth).duration_s.tolist() == [300.0, 360.0]  # one failure, the longest repair


def test_time_split_purges_across_boundaries() -> None:
    ts = np.arange(T0, T0 + 3 * 24 * 60 * MINUTE_MS, 2 * MINUTE_MS)
    config = TrainingConfig(horizon_min=25, purge_min=None)
    split = time_split(ts, config)
    part = split.parts(ts)
    assert config.purge == 60  # max(H, longest signal horizon)
    train, val, test = ts[part == "train"], ts[part == "validation"], ts[part == "test"]
    assert train.max() + config.purge * MINUTE_MS < split.validation_start_ms <= val.min()
    assert val.max() + config.purge * MINUTE_MS < split.test_start_ms <= test.min()
    assert len(test) / len(ts) == pytest.approx(0.2, abs=0.01)
    assert (part == "purged").sum() == 2 * (config.purge // 2)  # two gaps, one sample per 2 min


def test_metrics_and_lead_times_by_hand() -> None:
    frame = pd.DataFrame(
        {
            "machine_id": ["a"] * 6,
            "label": [0, 1, 1, 1, 0, 1],
            "failure_ts": [50, 50, 50, 50, 90, 90],
            "failure_mode": ["HDF"] * 4 + ["PWF"] * 2,
            "minutes_to_failure": [12.0, 9.0, 5.0, 1.0, 30.0, 2.0],
        }
    )
    alert = np.array([1, 0, 1, 1, 1, 0], dtype=bool)
    per_failure = lead_times(frame, alert)
    assert per_failure.detected.tolist() == [True, False]
    assert per_failure.lead_min.iloc[0] == 5.0  # the first alert in the window: 5 min ahead
    summary = lead_time_summary(per_failure)
    assert summary["failure_detection_rate"] == 0.5 and summary["lead_time_median_min"] == 5.0
    assert summary["detection_rate_PWF"] == 0.0
    m = classification_metrics(frame.label.to_numpy(), alert.astype(float), alert)
    assert (m["precision"], m["recall"]) == (0.5, 0.5)
    assert m["always_alert_f1"] == pytest.approx(2 * (4 / 6) / (1 + 4 / 6))


def test_threshold_choice_follows_the_operating_point() -> None:
    y = np.array([0, 0, 1, 0, 1, 1, 1, 0, 1, 1])
    score = np.arange(10) / 10
    f1_best = choose_threshold(y, score)
    f1 = {t: classification_metrics(y, score, score >= t)["f1"] for t in score}
    assert f1[f1_best] == max(f1.values())
    strict = choose_threshold(y, score, min_precision=0.8)
    assert classification_metrics(y, score, score >= strict)["precision"] >= 0.8
    with pytest.raises(ValueError, match="precision"):
        choose_threshold(y, score, min_precision=1.01)


def test_rule_alerts_on_any_limit_and_never_on_missing_signals() -> None:
    frame = pd.DataFrame(
        {
            "tool_wear_last": [210.0, np.nan, 10.0, np.nan],
            "temp_margin_mean_5m": [10.0, 8.7, 10.0, np.nan],
            "vibration_mean_5m": [2.0, 2.0, 5.0, np.nan],
        }
    )
    assert MaintenanceRule().alerts(frame).tolist() == [True, True, True, False]


SMALL = TrainingConfig(max_iter=120, importance_repeats=1, importance_max_samples=2000)


@pytest.fixture(scope="module")
def small_run():
    """Two simulated days of 20 machines, labelled at the default H."""
    dataset = simulate_dataset(machines=20, days=2.0, seed=5, sample_period_s=5.0)
    return dataset, training_frame(dataset)


def test_small_simulated_run_trains_a_useful_deterministic_model(small_run) -> None:
    dataset, frame = small_run
    rates = failure_rates(dataset)
    assert 0.026 <= rates["failing_cycle_share"] <= 0.042  # the physics' AI4I calibration (3.4 %)
    first = train_failure_model(frame, SMALL)
    second = train_failure_model(frame.copy(), SMALL)
    assert first.metrics == second.metrics and first.threshold == second.threshold
    np.testing.assert_array_equal(first.predict_proba(frame), second.predict_proba(frame))
    pd.testing.assert_frame_equal(first.feature_importances, second.feature_importances)
    other_seed = train_failure_model(frame, replace(SMALL, seed=1))
    assert other_seed.feature_importances.importance_mean.tolist() != first.feature_importances.importance_mean.tolist()

    m = first.metrics
    assert first.feature_names == FEATURE_NAMES
    assert m["pr_auc"] > m["prevalence"] + 0.1  # far better than chance
    assert 0.0 <= first.threshold <= 1.0
    assert m["lead_time_median_min"] <= SMALL.horizon_min
    assert first.counts["test_samples"] + first.counts["validation_samples"] + first.counts["train_samples"] + (
        first.counts["purged_samples"]
    ) == len(frame)
    baselines = evaluate_baselines(frame, first.split)
    assert m["f1"] > baselines["fixed"]["f1"]
    assert m["pr_auc"] > baselines["tuned"]["pr_auc"]
    # Calibrated: on the test part the mean probability is close to the observed rate.
    test = frame.loc[first.split.parts(frame.ts.to_numpy()) == "test"]
    assert first.predict_proba(test).mean() == pytest.approx(test.label.mean(), abs=0.08)


def test_the_model_can_be_logged_with_the_stated_skops_types(small_run, tmp_path) -> None:
    """What MLflow's skops format does on log_model: dump, then load with the trusted types."""
    _dataset, frame = small_run
    for method in ("isotonic", "sigmoid"):
        result = train_failure_model(frame, replace(SMALL, max_iter=5, calibration=method, importance_repeats=1))
        path = tmp_path / f"{method}.skops"
        skops.io.dump(result.model, path)
        assert set(skops.io.get_untrusted_types(file=path)) <= set(SKOPS_TRUSTED_TYPES)
        loaded = skops.io.load(path, trusted=list(SKOPS_TRUSTED_TYPES))
        x = frame.loc[:, list(FEATURE_NAMES)].to_numpy()[:50]
        np.testing.assert_array_equal(loaded.predict_proba(x), result.model.predict_proba(x))


def test_tuned_rule_is_chosen_on_the_data_given(small_run) -> None:
    _dataset, frame = small_run
    tuned = tune_rule(frame)
    f1 = {
        rule: classification_metrics(frame.label.to_numpy(), rule.alerts(frame), rule.alerts(frame))["f1"]
        for rule in (tuned, MaintenanceRule())
    }
    assert f1[tuned] >= f1[MaintenanceRule()]


@pytest.mark.slow
def test_full_simulated_evaluation() -> None:
    """Three weeks, 50 machines: the figures of docs/predictive-maintenance.md."""
    report = evaluate_on_simulation(weeks=3, machines=50, seed=2020)
    model, fixed, tuned = report["model"], report["baseline_fixed"], report["baseline_tuned"]
    assert report["data"]["samples"] > 200_000
    assert 0.028 <= report["data"]["failure_rates"]["failing_cycle_share"] <= 0.040
    assert model["f1"] >= 1.5 * fixed["f1"]
    assert model["f1"] > tuned["f1"] and model["pr_auc"] > tuned["pr_auc"] + 0.05
    assert model["f1"] > model["always_alert_f1"]
    assert model["pr_auc"] > model["prevalence"] + 0.2
    assert model["lead_time_median_min"] >= 0.5 * report["data"]["horizon_min"]
    assert model["failure_detection_rate"] > fixed["failure_detection_rate"]
