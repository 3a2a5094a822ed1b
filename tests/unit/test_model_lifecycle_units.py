"""The pure parts of the failure model's lifecycle: the gate, PSI, the announcement contract, the schedules."""

from __future__ import annotations

import datetime as dt
import itertools
import math

import dagster as dg
import msgspec
import numpy as np
import pandas as pd
import pytest

from plantstream.contract.promotions import ModelPromotion, PromotionAction, decode_promotion, encode_promotion
from plantstream.contract.topics import CATALOGUE, MODEL_PROMOTIONS
from plantstream.models.drift import SHARE_FLOOR, drifting, feature_profile, population_stability
from plantstream.models.gate import MIN_ROC_AUC, decide
from plantstream.models.lifecycle import permute_training_labels
from plantstream.models.training import TrainingConfig, time_split
from plantstream.settings import Settings

GOOD = {"pr_auc": 0.78, "roc_auc": 0.77, "f1": 0.69, "precision": 0.62, "recall": 0.77}


def test_first_candidate_is_promoted_when_it_beats_chance_rule_and_always_alert() -> None:
    decision = decide(GOOD, None, prevalence=0.48, baseline_f1=0.34, margin=0.005)
    assert decision.promote and decision.reason.startswith("promoted (first champion)")
    assert decision.checks == {"better_than_chance": True, "beats_rule": True, "beats_always_alert": True}


def test_a_model_without_skill_is_refused_even_without_a_champion() -> None:
    # What a shuffled-label model measured: PR-AUC just above the prevalence, F1 of alerting always.
    shuffled = {"pr_auc": 0.4608, "roc_auc": 0.509, "f1": 0.6262, "precision": 0.456, "recall": 0.999}
    decision = decide(shuffled, None, prevalence=0.456, baseline_f1=0.308, margin=0.005)
    assert not decision.promote
    assert not decision.checks["better_than_chance"] and not decision.checks["beats_always_alert"]
    assert decision.checks["beats_rule"]  # alerting always beats the rule here: that check alone would pass it
    assert f"needs {MIN_ROC_AUC}" in decision.reason


def test_the_champion_is_kept_unless_the_candidate_wins_by_the_margin() -> None:
    champion = {"pr_auc": 0.776, "roc_auc": 0.765, "f1": 0.686}
    same = decide(champion, champion, prevalence=0.48, baseline_f1=0.34, margin=0.005, champion_version="3")
    assert not same.promote and not same.checks["pr_auc_gain"] and same.checks["f1_not_lower"]
    assert "champion v3" in same.reason
    better = {**champion, "pr_auc": 0.782}
    assert decide(better, champion, prevalence=0.48, baseline_f1=0.34, margin=0.005).promote
    worse_f1 = {**better, "f1": 0.68}
    refused = decide(worse_f1, champion, prevalence=0.48, baseline_f1=0.34, margin=0.005)
    assert not refused.promote and refused.checks == {
        "better_than_chance": True,
        "beats_rule": True,
        "beats_always_alert": True,
        "pr_auc_gain": True,
        "f1_not_lower": False,
    }
    nan = decide({**GOOD, "pr_auc": math.nan}, None, prevalence=0.48, baseline_f1=0.34, margin=0.005)
    assert not nan.promote  # NaN fails the check it is in
    with pytest.raises(ValueError, match="margin"):
        decide(GOOD, None, prevalence=0.48, baseline_f1=0.34, margin=-0.1)


def test_psi_is_zero_on_the_same_distribution_and_large_on_a_shift() -> None:
    rng = np.random.default_rng(7)
    train = pd.DataFrame({"a": rng.normal(0, 1, 20_000), "b": np.where(rng.random(20_000) < 0.3, np.nan, 1.0)})
    profile = feature_profile(train, ["a", "b"])
    same = population_stability(profile, pd.DataFrame({"a": rng.normal(0, 1, 5_000), "b": train["b"][:5_000]}))
    assert same["a"] < 0.01 and same["b"] < 0.01
    shifted = population_stability(profile, pd.DataFrame({"a": rng.normal(1, 1, 5_000), "b": np.full(5_000, np.nan)}))
    assert shifted["a"] > 0.25 and shifted["b"] > 0.25  # all missing: the NaN bin carries the shift
    assert list(drifting(shifted)) == sorted(shifted, key=lambda k: -shifted[k])
    # By hand for the NaN bin of b: expected shares (0.7 at value 1, 0.3 NaN), actual (0, 1).
    shares = dict(zip(("one", "nan"), (0.7, 0.3), strict=True))
    expected = (SHARE_FLOOR - shares["one"]) * math.log(SHARE_FLOOR / shares["one"]) + (1 - shares["nan"]) * math.log(
        1 / shares["nan"]
    )
    assert shifted["b"] == pytest.approx(expected, rel=0.05)
    assert math.isnan(population_stability(profile, pd.DataFrame({"a": [], "b": []}))["a"])


def test_negative_control_permutes_training_and_validation_labels_only() -> None:
    ts = np.arange(0, 3 * 86_400_000, 120_000, dtype=np.int64) + 1_767_571_200_000
    labels = (np.arange(len(ts)) % 3 == 0).astype(np.int8)
    frame = pd.DataFrame({"machine_id": "m", "ts": ts, "label": labels})
    config = TrainingConfig()
    permuted = permute_training_labels(frame, config, seed=1)
    test = time_split(ts, config).parts(ts) == "test"
    assert (permuted["label"][test] == frame["label"][test]).all()
    assert (permuted["label"][~test] != frame["label"][~test]).any()
    assert permuted["label"].sum() == frame["label"].sum()


def test_the_promotion_announcement_round_trips_and_is_in_the_catalogue() -> None:
    promotion = ModelPromotion(
        model="plantstream-failure",
        version="7",
        previous_version="5",
        action=PromotionAction.PROMOTE,
        model_uri="models:/plantstream-failure/7",
        threshold=0.348,
        horizon_min=10,
        seq=3,
        ts=1_767_571_200_000,
        metrics={"pr_auc": 0.776},
    )
    assert decode_promotion(encode_promotion(promotion)) == promotion
    assert MODEL_PROMOTIONS in CATALOGUE and MODEL_PROMOTIONS.payload is ModelPromotion
    with pytest.raises(msgspec.ValidationError):
        decode_promotion(b'{"model": "m", "version": "1", "action": "demote"}')


def test_weekly_schedule_requests_the_training_window_and_the_daily_one_yesterday(tmp_path) -> None:
    from plantstream.orchestration.retraining import failure_model_weekly, failure_scores_daily

    settings = Settings(state_dir=tmp_path)
    monday = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(scheduled_execution_time=monday, resources={"settings": settings})
    request = failure_model_weekly(context)
    assert request.tags["dagster/asset_partition_range_start"] == "2026-02-09"  # 21 days ending yesterday
    assert request.tags["dagster/asset_partition_range_end"] == "2026-03-01"
    assert request.run_key == "retrain-weekly-2026-03-02"
    daily = failure_scores_daily(dg.build_schedule_context(scheduled_execution_time=monday))
    assert daily.partition_key == "2026-03-01"


def test_lineage_runs_from_the_stream_through_features_and_model_back_to_the_stream(tmp_path) -> None:
    from plantstream.orchestration.definitions import build_definitions

    graph = build_definitions(Settings(state_dir=tmp_path)).resolve_asset_graph()
    path = [
        ["kafka", "factory_machine_telemetry"],
        ["bronze", "telemetry"],
        ["silver", "telemetry"],
        ["silver", "telemetry_by_day"],  # gold's daily view of silver
        ["gold", "failure_features"],
        ["models", "failure_model"],
        ["kafka", "factory_models_promotions"],
        ["kafka", "factory_models_scores"],  # the stream's inference branch
    ]
    for parent, child in itertools.pairwise(path):
        assert dg.AssetKey(parent) in graph.get(dg.AssetKey(child)).parent_keys, (parent, child)
    assert dg.AssetKey(["bronze", "ground_truth"]) in graph.get(dg.AssetKey(["gold", "failure_labels"])).parent_keys
    for key in ("bronze/ground_truth", "gold/failure_features", "gold/failure_labels", "models/failure_model"):
        node = graph.get(dg.AssetKey(key.split("/")))
        assert node.group_name == "predictive_maintenance" and node.owners and node.kinds and node.description, key
        assert node.metadata, key
