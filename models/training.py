"""Training the failure model: time split with purge, gradient boosting, calibration, threshold, metrics.

:func:`train_failure_model` is the one entry point (Dagster's training asset and
``plantstream train`` call it; MLflow logging stays with the caller).  It takes a
labelled feature frame (:func:`plantstream.models.features.offline_features` +
:func:`plantstream.models.labels.label_samples`) and:

1. splits it **by time** into train / validation / test (60 / 20 / 20 % of the time
   span by default) with a **purge gap** before each boundary: samples whose label
   window ``(t, t + H]`` or whose signal windows could reach across a boundary are
   left out, so no failure labels a sample on both sides and every part is scored on
   failures it has never seen;
2. fits a ``HistGradientBoostingClassifier`` on train (NaN-aware: machine types without
   a signal need no imputation; ``class_weight="balanced"`` is there for rare failures;
   fixed iteration count, no random early-stopping split, so it is deterministic);
3. calibrates its probabilities on the validation part (isotonic, the boosted model
   frozen) - the score an operator sees is a probability of failing within H;
4. picks the decision threshold on the validation part for the stated operating
   point: maximum F1, or with ``min_precision`` the highest recall whose precision is
   at least that;
5. reports on the test part: PR-AUC, ROC-AUC, precision / recall / F1 at the threshold,
   and the **lead time**: for each test failure, the time between the first alert in
   the H minutes before it and the failure (a failure without alert is missed).

For the lead: MLflow 3.17 refuses to log tree models with its default skops format
unless they are trusted: ``mlflow.sklearn.log_model(result.model, name="model",
skops_trusted_types=list(SKOPS_TRUSTED_TYPES), ...)`` (docs/predictive-maintenance.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.inspection import permutation_importance
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from threadpoolctl import threadpool_limits

from plantstream.models.features import FEATURE_NAMES, MAX_SIGNAL_HORIZON_MIN, MINUTE_MS, feature_matrix
from plantstream.models.labels import DEFAULT_HORIZON_MIN

SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)
"""What skops does not trust by default in :attr:`TrainingResult.model` (either calibration method):
pass it as MLflow's ``skops_trusted_types`` (``tests/unit/test_training.py`` checks the list)."""


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides the model; the same config and data give the same result."""

    horizon_min: int = DEFAULT_HORIZON_MIN
    validation_share: float = 0.2
    test_share: float = 0.2
    purge_min: int | None = None  # default: max(H, longest signal horizon)
    seed: int = 0
    max_iter: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0
    # None: at H = 10 min a third to a half of the samples are positive on the simulated
    # plant, so there is no imbalance to correct, and calibration fixes the scale anyway.
    # "balanced" (for rarer failures) weights the samples, and sklearn 1.9 then bins each
    # feature with 255 weighted percentiles: 6 s instead of 0.1 s on 10k x 58.
    class_weight: Literal["balanced"] | None = None
    calibration: Literal["isotonic", "sigmoid"] = "isotonic"
    min_precision: float | None = None  # None: the threshold maximises F1 on validation
    importance_repeats: int = 3
    importance_max_samples: int = 20_000
    # OpenMP threads for fitting and scoring.  One by default: on a shared 2-core machine
    # two threads were 6x slower than one (47 s vs 8 s for the same fit), and a fixed count
    # keeps results independent of the machine.  None: every core.
    n_threads: int | None = 1

    @property
    def purge(self) -> int:
        """Minutes left out before each boundary: label window and signal windows."""
        return self.purge_min if self.purge_min is not None else max(self.horizon_min, MAX_SIGNAL_HORIZON_MIN)


@dataclass(frozen=True)
class SplitBoundaries:
    """Train ``[start, validation_start - purge)``, validation ``[validation_start,
    test_start - purge)``, test ``[test_start, end]`` (epoch ms)."""

    start_ms: int
    validation_start_ms: int
    test_start_ms: int
    end_ms: int
    purge_min: int

    def parts(self, ts_ms: np.ndarray) -> np.ndarray:
        """``"train"`` / ``"validation"`` / ``"test"`` / ``"purged"`` per sample time."""
        purge = self.purge_min * MINUTE_MS
        out = np.full(len(ts_ms), "purged", dtype=object)
        out[ts_ms < self.validation_start_ms - purge] = "train"
        out[(ts_ms >= self.validation_start_ms) & (ts_ms < self.test_start_ms - purge)] = "validation"
        out[ts_ms >= self.test_start_ms] = "test"
        return out

    def as_dict(self) -> dict[str, int]:
        return {
            "start_ms": self.start_ms,
            "validation_start_ms": self.validation_start_ms,
            "test_start_ms": self.test_start_ms,
            "end_ms": self.end_ms,
            "purge_min": self.purge_min,
        }


def time_split(ts_ms: np.ndarray, config: TrainingConfig) -> SplitBoundaries:
    """Boundaries at shares of the samples' time span, on whole minutes."""
    start, end = int(ts_ms.min()), int(ts_ms.max())
    span = end - start
    train_share = 1.0 - config.validation_share - config.test_share
    if train_share <= 0 or config.validation_share <= 0 or config.test_share <= 0:
        raise ValueError("train, validation and test shares must all be positive")

    def at(share: float) -> int:
        return (start + round(span * share)) // MINUTE_MS * MINUTE_MS

    return SplitBoundaries(start, at(train_share), at(1.0 - config.test_share), end, config.purge)


# -- metrics (shared with the baseline) -------------------------------------------------


def classification_metrics(y: np.ndarray, score: np.ndarray, alert: np.ndarray) -> dict[str, float]:
    """PR-AUC and ROC-AUC of the score; precision, recall, F1 of the alerts; and references.

    ``always_alert_f1`` is the F1 of alerting on every sample (``2p / (1 + p)`` for
    prevalence ``p``): any model worth deploying must beat it.
    """
    y = np.asarray(y).astype(bool)
    alert = np.asarray(alert).astype(bool)
    tp = int((alert & y).sum())
    fp = int((alert & ~y).sum())
    fn = int((~alert & y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    prevalence = float(y.mean()) if len(y) else float("nan")
    both = 0 < y.sum() < len(y)
    return {
        "samples": float(len(y)),
        "positives": float(y.sum()),
        "prevalence": prevalence,
        "pr_auc": float(average_precision_score(y, score)) if both else float("nan"),
        "roc_auc": float(roc_auc_score(y, score)) if both else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "alert_rate": float(alert.mean()) if len(alert) else float("nan"),
        "always_alert_f1": 2 * prevalence / (1 + prevalence) if len(y) else float("nan"),
    }


def lead_times(frame: pd.DataFrame, alert: np.ndarray) -> pd.DataFrame:
    """Per failure that has samples in its H-minute window: detected?, lead time of the first alert.

    ``frame`` carries ``machine_id``, ``label``, ``failure_ts``, ``failure_mode`` and
    ``minutes_to_failure`` (:func:`~plantstream.models.labels.label_samples`): its
    positive samples are exactly those in the H minutes before their failure, so the
    first alert is the alerted positive with the most minutes to go.
    """
    positive = frame["label"].to_numpy() == 1
    rows = frame.loc[positive, ["machine_id", "failure_ts", "failure_mode", "minutes_to_failure"]].copy()
    rows["alert"] = np.asarray(alert, dtype=bool)[positive]
    rows["alerted_minutes"] = np.where(rows["alert"], rows["minutes_to_failure"], np.nan)
    grouped = rows.groupby(["machine_id", "failure_ts"], sort=True)
    return pd.DataFrame(
        {
            "failure_mode": grouped["failure_mode"].first(),
            "samples": grouped["alert"].size(),
            "detected": grouped["alert"].any(),
            "lead_min": grouped["alerted_minutes"].max(),
        }
    ).reset_index()


def lead_time_summary(per_failure: pd.DataFrame) -> dict[str, float]:
    """Median and quartiles of the lead time over detected failures; share detected, per mode."""
    detected = per_failure.loc[per_failure["detected"], "lead_min"].to_numpy(dtype=float)
    out = {
        "failures": float(len(per_failure)),
        "failures_detected": float(len(detected)),
        "failure_detection_rate": len(detected) / len(per_failure) if len(per_failure) else float("nan"),
        "lead_time_median_min": float(np.median(detected)) if len(detected) else float("nan"),
        "lead_time_p25_min": float(np.percentile(detected, 25)) if len(detected) else float("nan"),
        "lead_time_p75_min": float(np.percentile(detected, 75)) if len(detected) else float("nan"),
    }
    primary = per_failure["failure_mode"].str.split("+").str[0]
    for mode, group in per_failure.groupby(primary):
        out[f"detection_rate_{mode}"] = float(group["detected"].mean())
        lead = group.loc[group["detected"], "lead_min"]
        out[f"lead_time_median_min_{mode}"] = float(lead.median()) if len(lead) else float("nan")
    return out


def choose_threshold(y: np.ndarray, score: np.ndarray, min_precision: float | None = None) -> float:
    """The operating point on validation: max F1, or max recall with precision >= ``min_precision``.

    A threshold is a score value: alert when ``score >= threshold``.
    """
    precision, recall, thresholds = precision_recall_curve(y, score)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    if min_precision is None:
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        return float(thresholds[int(np.argmax(f1))])
    ok = np.flatnonzero(precision >= min_precision)
    if not len(ok):
        raise ValueError(f"no threshold reaches precision {min_precision} on validation")
    return float(thresholds[ok[np.argmax(recall[ok])]])


# -- training ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingResult:
    """What the training asset logs: the model and everything needed to judge and reuse it."""

    model: CalibratedClassifierCV
    threshold: float
    feature_names: tuple[str, ...]
    metrics: dict[str, float]  # test part: classification metrics + lead-time summary
    validation_metrics: dict[str, float]
    lead_times: pd.DataFrame  # per test failure: detected, lead_min
    feature_importances: pd.DataFrame  # permutation importance (PR-AUC drop) on the test part
    split: SplitBoundaries
    config: TrainingConfig
    counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of failing within H minutes, per row of a feature frame."""
        return self.model.predict_proba(feature_matrix(features, self.feature_names))[:, 1]

    def alerts(self, features: pd.DataFrame) -> np.ndarray:
        return self.predict_proba(features) >= self.threshold


def train_failure_model(
    frame: pd.DataFrame,
    config: TrainingConfig | None = None,
    *,
    feature_names: tuple[str, ...] = FEATURE_NAMES,
) -> TrainingResult:
    """Train, calibrate, threshold and evaluate the "fails within H" model on a labelled feature frame.

    ``frame``: one row per sample with ``machine_id``, ``ts`` (epoch ms), the feature
    columns and the label columns of :func:`~plantstream.models.labels.label_samples`
    (labelled with ``config.horizon_min``).  Deterministic given ``config.seed``.
    """
    config = config or TrainingConfig()
    with threadpool_limits(limits=config.n_threads, user_api="openmp"):
        return _train(frame, config, feature_names)


def _train(frame: pd.DataFrame, config: TrainingConfig, feature_names: tuple[str, ...]) -> TrainingResult:
    started = time.perf_counter()
    ts = frame["ts"].to_numpy(dtype=np.int64)
    split = time_split(ts, config)
    part = split.parts(ts)
    sets = {name: frame.loc[part == name] for name in ("train", "validation", "test")}
    for name, rows in sets.items():
        y = rows["label"].to_numpy()
        if len(rows) == 0 or y.min() == y.max():
            raise ValueError(f"the {name} part needs samples of both classes ({len(rows)} samples)")
    x = {name: feature_matrix(rows, feature_names) for name, rows in sets.items()}
    y = {name: rows["label"].to_numpy(dtype=np.int8) for name, rows in sets.items()}

    booster = HistGradientBoostingClassifier(
        learning_rate=config.learning_rate,
        max_iter=config.max_iter,
        max_leaf_nodes=config.max_leaf_nodes,
        min_samples_leaf=config.min_samples_leaf,
        l2_regularization=config.l2_regularization,
        class_weight=config.class_weight,
        early_stopping=False,
        random_state=config.seed,
    )
    booster.fit(x["train"], y["train"])
    fitted = time.perf_counter()
    model = CalibratedClassifierCV(FrozenEstimator(booster), method=config.calibration)
    model.fit(x["validation"], y["validation"])
    score = {name: model.predict_proba(x[name])[:, 1] for name in ("validation", "test")}
    threshold = choose_threshold(y["validation"], score["validation"], config.min_precision)
    alert = {name: score[name] >= threshold for name in score}

    validation_metrics = classification_metrics(y["validation"], score["validation"], alert["validation"])
    validation_metrics.update(lead_time_summary(lead_times(sets["validation"], alert["validation"])))
    per_failure = lead_times(sets["test"], alert["test"])
    metrics = classification_metrics(y["test"], score["test"], alert["test"])
    metrics.update(lead_time_summary(per_failure))

    rng = np.random.default_rng(config.seed)
    n_test = len(y["test"])
    pick = np.sort(rng.choice(n_test, size=min(n_test, config.importance_max_samples), replace=False))
    importance = permutation_importance(
        model,
        x["test"][pick],
        y["test"][pick],
        scoring="average_precision",
        n_repeats=config.importance_repeats,
        random_state=config.seed,
    )
    importances = pd.DataFrame(
        {
            "feature": list(feature_names),
            "importance_mean": importance.importances_mean,
            "importance_std": importance.importances_std,
        }
    ).sort_values("importance_mean", ascending=False, kind="stable", ignore_index=True)
    done = time.perf_counter()
    return TrainingResult(
        model=model,
        threshold=threshold,
        feature_names=tuple(feature_names),
        metrics=metrics,
        validation_metrics=validation_metrics,
        lead_times=per_failure,
        feature_importances=importances,
        split=split,
        config=config,
        counts={
            **{f"{name}_samples": len(rows) for name, rows in sets.items()},
            **{f"{name}_positives": int(y[name].sum()) for name in y},
            "purged_samples": int((part == "purged").sum()),
        },
        timings={"fit_s": fitted - started, "calibrate_evaluate_s": done - fitted, "total_s": done - started},
    )


__all__ = [
    "SKOPS_TRUSTED_TYPES",
    "SplitBoundaries",
    "TrainingConfig",
    "TrainingResult",
    "choose_threshold",
    "classification_metrics",
    "lead_time_summary",
    "lead_times",
    "time_split",
    "train_failure_model",
]
