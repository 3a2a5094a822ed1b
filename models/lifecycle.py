"""One round of the failure model's lifecycle: train, log, register, gate, and promote or refuse.

:func:`train_register_gate` is what the Dagster asset ``models/failure_model`` (and so the
weekly schedule, the drift sensor and ``plantstream train``) runs on a labelled feature
frame read from the lake:

1. :func:`~plantstream.models.training.train_failure_model` (time split with purge,
   gradient boosting, calibration, the threshold chosen on validation);
2. the engineer's rule on the same test period (:func:`~plantstream.models.baseline.evaluate_baselines`);
3. one MLflow run and a new registered version (:func:`~plantstream.models.registry.log_candidate`);
4. the gate: the candidate *as registered* (loaded back from the registry) and the current
   champion are scored on the candidate's test part, which the candidate has never seen,
   and :func:`~plantstream.models.gate.decide` compares them with the configured margin;
5. the decision recorded on the version and the run, and the ``champion`` alias moved and
   announced only if the candidate won.

A **negative control** (``negative_control_seed``) permutes the labels of the training and
validation parts (the test part keeps the true labels): the model learns nothing, and the
gate must refuse it.  It is never promoted, whatever the gate says; if the gate would have
promoted it, the gate is broken and this raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from plantstream.models.baseline import evaluate_baselines
from plantstream.models.drift import feature_profile
from plantstream.models.gate import GateDecision, decide
from plantstream.models.plots import feature_importance_png, lead_time_png
from plantstream.models.registry import Candidate, log_candidate, promote, record_decision
from plantstream.models.serving import ServingModel, champion_version, load_version
from plantstream.models.training import (
    TrainingConfig,
    TrainingResult,
    classification_metrics,
    lead_time_summary,
    lead_times,
    time_split,
    train_failure_model,
)
from plantstream.settings import Settings

Progress = Callable[[str], None]


class NegativeControlPromotedError(RuntimeError):
    """The gate would have promoted a model trained on permuted labels: the gate is broken."""


def permute_training_labels(frame: pd.DataFrame, config: TrainingConfig, seed: int) -> pd.DataFrame:
    """``frame`` with the labels of its training and validation parts permuted (the test part untouched)."""
    parts = time_split(frame["ts"].to_numpy(dtype=np.int64), config).parts(frame["ts"].to_numpy(dtype=np.int64))
    rows = np.flatnonzero(parts != "test")
    labels = frame["label"].to_numpy().copy()
    labels[rows] = np.random.default_rng(seed).permutation(labels[rows])
    return frame.assign(label=labels)


def held_out_metrics(model: ServingModel, test: pd.DataFrame) -> dict[str, float]:
    """``model``'s figures on a labelled test frame, at its own threshold (what the gate compares)."""
    score = model.predict_proba(test)
    alert = score >= model.threshold
    metrics = classification_metrics(test["label"].to_numpy(), score, alert)
    metrics.update(lead_time_summary(lead_times(test, alert)))
    return metrics


@dataclass(frozen=True)
class LifecycleResult:
    result: TrainingResult
    baselines: dict[str, Any]
    candidate: Candidate
    candidate_metrics: dict[str, float]  # the registered candidate on its test part
    champion_metrics: dict[str, float] | None  # the champion before, on the same rows
    decision: GateDecision
    promoted: bool
    champion_after: str | None
    negative_control: bool
    seconds: dict[str, float]

    def summary(self) -> dict[str, Any]:
        """The figures ``plantstream train --json`` prints (and Dagster shows)."""
        m = self.candidate_metrics
        return {
            "pr_auc": m["pr_auc"],
            "roc_auc": m["roc_auc"],
            "f1": m["f1"],
            "precision": m["precision"],
            "recall": m["recall"],
            "threshold": self.result.threshold,
            "baseline_f1": self.baselines["fixed"]["f1"],
            "baseline_tuned_f1": self.baselines["tuned"]["f1"],
            "median_lead_time_min": m["lead_time_median_min"],
            "failure_detection_rate": m["failure_detection_rate"],
            "promoted": self.promoted,
            "model_version": self.candidate.version,
            "champion_version": self.champion_after,
            "previous_champion_version": self.decision.champion_version,
            "gate_reason": self.decision.reason,
            "negative_control": self.negative_control,
            "run_id": self.candidate.run_id,
        }


def train_register_gate(
    settings: Settings,
    frame: pd.DataFrame,
    config: TrainingConfig,
    *,
    data: Mapping[str, Any],
    versions: Mapping[str, int],
    negative_control_seed: int | None = None,
    progress: Progress = lambda _message: None,
) -> LifecycleResult:
    """Steps 1-5 of the module docstring on a labelled feature frame; see there."""
    started = time.perf_counter()
    config = replace(config, horizon_min=settings.models.horizon_min)
    negative = negative_control_seed is not None
    if negative:
        frame = permute_training_labels(frame, config, negative_control_seed)
        progress(f"NEGATIVE CONTROL: training and validation labels permuted (seed {negative_control_seed})")
    progress(f"training on {len(frame):,} samples ({data.get('window', '')})")
    result = train_failure_model(frame, config)
    baselines = evaluate_baselines(frame, result.split)
    trained = time.perf_counter()
    progress(
        f"trained in {trained - started:.1f} s: test PR-AUC {result.metrics['pr_auc']:.3f}, "
        f"F1 {result.metrics['f1']:.3f} at threshold {result.threshold:.3f}; "
        f"the engineer's rule F1 {baselines['fixed']['f1']:.3f}"
    )
    parts = result.split.parts(frame["ts"].to_numpy(dtype=np.int64))
    test = frame.loc[parts == "test"]
    candidate = log_candidate(
        settings,
        result,
        baselines=baselines,
        frame=frame,
        data=data,
        versions=versions,
        drift_reference=feature_profile(frame.loc[parts == "train"], result.feature_names),
        plots={
            "feature_importance": feature_importance_png(result.feature_importances),
            "lead_time": lead_time_png(result.lead_times, config.horizon_min),
        },
        negative_control=negative,
    )
    logged = time.perf_counter()
    progress(f"registered {candidate.model_uri} (run {candidate.run_url})")
    # The gate judges what was registered: the version loaded back from the registry.
    registered = load_version(settings, candidate.version)
    candidate_metrics = held_out_metrics(registered, test)
    if not np.isclose(candidate_metrics["pr_auc"], result.metrics["pr_auc"], rtol=0, atol=1e-12):
        raise RuntimeError(
            f"{candidate.model_uri} loaded back scores PR-AUC {candidate_metrics['pr_auc']} on its test part, the "
            f"trained model {result.metrics['pr_auc']}: the registered artifact is not the model that was trained"
        )
    champion = champion_version(settings)
    champion_metrics = None
    saw_test = False
    if champion is not None:
        current = load_version(settings, champion)
        champion_metrics = held_out_metrics(current, test)
        seen_until = _seen_until(settings, champion)
        saw_test = seen_until is not None and seen_until > result.split.test_start_ms
    decision = decide(
        candidate_metrics,
        champion_metrics,
        prevalence=candidate_metrics["prevalence"],
        baseline_f1=baselines["fixed"]["f1"],
        margin=settings.models.gate_margin,
        champion_version=champion,
        champion_saw_test_period=saw_test,
    )
    record_decision(settings, candidate, decision)
    if negative and decision.promote:
        raise NegativeControlPromotedError(
            f"the gate would have promoted {candidate.model_uri}, trained on permuted labels: {decision.reason}"
        )
    promoted = decision.promote
    if promoted:
        promote(settings, candidate, decision)
        progress(f"PROMOTED {candidate.model_uri} to champion: {decision.reason}")
    else:
        progress(f"GATE REFUSED {candidate.model_uri}; champion stays v{champion}: {decision.reason}")
    done = time.perf_counter()
    return LifecycleResult(
        result=result,
        baselines=baselines,
        candidate=candidate,
        candidate_metrics=candidate_metrics,
        champion_metrics=champion_metrics,
        decision=decision,
        promoted=promoted,
        champion_after=candidate.version if promoted else champion,
        negative_control=negative,
        seconds={
            "train": trained - started,
            "log_register": logged - trained,
            "gate": done - logged,
            "total": done - started,
        },
    )


def _seen_until(settings: Settings, version: str) -> int | None:
    from plantstream.connect.mlflow import mlflow_client
    from plantstream.models.registry import TAG_SEEN_UNTIL

    tags = mlflow_client(settings).get_model_version(settings.models.registered_model, version).tags
    return int(tags[TAG_SEEN_UNTIL]) if TAG_SEEN_UNTIL in tags else None


__all__ = [
    "LifecycleResult",
    "NegativeControlPromotedError",
    "held_out_metrics",
    "permute_training_labels",
    "train_register_gate",
]
