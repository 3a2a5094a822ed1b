"""The lifecycle on the current lake, in process: what ``plantstream train`` (and the tests) run.

:func:`train_on_lake` materialises the real assets of the code location, in order, on a
Dagster instance (ephemeral unless one is given), exactly as the ``failure_model_retrain``
job does: silver brought up to date with bronze (optional), ``bronze/ground_truth``
imported, ``gold/failure_features`` and ``gold/failure_labels`` of the training window (one
step for the range), then ``models/failure_model`` (train, MLflow, registry, gate).  The
gate's refusal fails that step's blocking check; here it is a result (``promoted=False``),
reported loudly, not an exception.

The training window is the last ``PLANTSTREAM_MODELS__TRAINING_DAYS`` days that silver
has telemetry for, unless given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from plantstream.assets.predictive_maintenance.assets import (
    FEATURES_KEY,
    GATE_CHECK,
    GROUND_TRUTH_KEY,
    LABELS_KEY,
    MODEL_KEY,
    SCORES_KEY,
)
from plantstream.contract.streams import STREAMS
from plantstream.orchestration.resources import Lake
from plantstream.settings import Settings

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
SILVER = dg.AssetSelection.assets(*(dg.AssetKey(["silver", spec.name]) for spec in STREAMS))
Progress = Callable[[str], None]


class PipelineError(RuntimeError):
    """A stage failed for another reason than the gate's refusal."""


@dataclass(frozen=True)
class PipelineResult:
    first_day: dt.date
    last_day: dt.date
    promoted: bool
    model: dict[str, Any]  # the model asset's materialisation metadata, as plain values
    seconds: dict[str, float] = field(default_factory=dict)

    def json_line(self) -> dict[str, Any]:
        """The interface of ``plantstream train --json`` (plus context)."""
        m = self.model
        return {
            "pr_auc": m["pr_auc"],
            "f1": m["f1"],
            "baseline_f1": m["baseline_f1"],
            "median_lead_time_min": m["median_lead_time_min"],
            "promoted": self.promoted,
            "model_version": m["model_version"],
            "champion_version": m["champion_version"] or None,
            "previous_champion_version": m["previous_champion_version"] or None,
            "roc_auc": m["roc_auc"],
            "precision": m["precision"],
            "recall": m["recall"],
            "threshold": m["threshold"],
            "baseline_tuned_f1": m["baseline_tuned_f1"],
            "failure_detection_rate": m["failure_detection_rate"],
            "gate_reason": m["gate_reason"],
            "negative_control": m["negative_control"],
            "training_window": m["training_window"],
            "delta_versions": m["delta_versions"],
            "mlflow_run": m["mlflow_run"],
            "seconds": self.seconds,
        }


def _plain(value: dg.MetadataValue) -> Any:
    raw = value.value
    if isinstance(raw, float | int | str | bool | dict | list) or raw is None:
        return float("nan") if raw == "nan" else raw
    return str(raw)


def _range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    return {RANGE_START: first.isoformat(), RANGE_END: last.isoformat()}


class _Runner:
    def __init__(self, settings: Settings, instance: dg.DagsterInstance | None, log_level: str) -> None:
        from plantstream.orchestration.definitions import build_definitions

        self.defs = build_definitions(settings)
        self.assets = list(self.defs.assets or [])
        self.instance = instance or dg.DagsterInstance.ephemeral()
        self.log_level = log_level

    def run(
        self,
        selection: dg.AssetSelection,
        *,
        tags: dict[str, str] | None = None,
        ops: dict[str, Any] | None = None,
        partition: str | None = None,
        log_level: str | None = None,
    ) -> dg.ExecuteInProcessResult:
        loggers = {"console": {"config": {"log_level": log_level or self.log_level}}}
        return dg.materialize(
            self.assets,
            selection=selection,
            instance=self.instance,
            resources=self.defs.resources,
            tags=tags,
            partition_key=partition,
            run_config={"loggers": loggers, **({"ops": ops} if ops else {})},
            raise_on_error=False,
        )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    messages = [
        event.step_failure_data.error.message.strip()
        for event in result.all_events
        if event.event_type_value == "STEP_FAILURE" and event.step_failure_data and event.step_failure_data.error
    ]
    return "; ".join(messages) or "the run failed"


def train_on_lake(
    settings: Settings,
    *,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    refresh_silver: bool = True,
    rebuild_features: bool = True,
    model_config: dict[str, Any] | None = None,
    instance: dg.DagsterInstance | None = None,
    progress: Progress = lambda _message: None,
    log_level: str = "WARNING",
) -> PipelineResult:
    """Silver, ground truth, features and labels of the window, then the model (see the module docstring)."""
    import time

    runner = _Runner(settings, instance, log_level)
    lake = Lake(settings)
    seconds: dict[str, float] = {}

    def stage(name: str, selection: dg.AssetSelection, **kwargs: Any) -> dg.ExecuteInProcessResult:
        started = time.perf_counter()
        progress(f"{name} ...")
        result = runner.run(selection, **kwargs)
        seconds[name] = round(time.perf_counter() - started, 2)
        progress(f"{name}: {'done' if result.success else 'FAILED'} in {seconds[name]:.1f} s")
        return result

    if refresh_silver:
        result = stage("silver", SILVER.without_checks())
        if not result.success:
            raise PipelineError(f"silver: {_failure(result)}")
    days = lake.days("silver", "telemetry")
    if not days:
        raise PipelineError("silver/telemetry holds no data: nothing to train on (plantstream simulate history?)")
    last = last_day or days[-1]
    first = first_day or max(days[0], last - dt.timedelta(days=settings.models.training_days - 1))
    progress(f"training window {first} .. {last} ({(last - first).days + 1} days)")
    result = stage("ground truth", dg.AssetSelection.assets(GROUND_TRUTH_KEY))
    if not result.success:
        raise PipelineError(f"ground truth: {_failure(result)}")
    if rebuild_features:
        result = stage(
            "features and labels",
            dg.AssetSelection.assets(FEATURES_KEY, LABELS_KEY),
            tags=_range_tags(first, last),
            log_level="INFO",  # a line per day
        )
        if not result.success:
            raise PipelineError(f"features and labels: {_failure(result)}")
    config = {"first_day": first.isoformat(), "last_day": last.isoformat(), **(model_config or {})}
    # The gate's refusal fails the step (a blocking check): the result below says so, without Dagster's
    # stack trace of the check failure.
    result = stage(
        "model",
        dg.AssetSelection.assets(MODEL_KEY),
        ops={"models__failure_model": {"config": config}},
        log_level="CRITICAL",
    )
    materialized = result.asset_materializations_for_node("models__failure_model")
    if not materialized:
        raise PipelineError(f"model: {_failure(result)}")
    metadata = {key: _plain(value) for key, value in materialized[-1].metadata.items()}
    checks = [e for e in result.get_asset_check_evaluations() if e.check_name == GATE_CHECK]
    promoted = bool(metadata["promoted"])
    if not result.success and (promoted or not checks or checks[-1].passed):
        raise PipelineError(f"model: {_failure(result)}")  # failed for another reason than the gate
    return PipelineResult(first, last, promoted, metadata, seconds)


def score_on_lake(
    settings: Settings,
    day: dt.date,
    *,
    instance: dg.DagsterInstance | None = None,
    progress: Progress = lambda _message: None,
    log_level: str = "WARNING",
) -> dict[str, Any]:
    """Batch scores of ``day`` by the champion (``gold/failure_scores``), with its features and labels first."""
    runner = _Runner(settings, instance, log_level)
    progress(f"features, labels and scores of {day} ...")
    result = runner.run(
        dg.AssetSelection.assets(GROUND_TRUTH_KEY, FEATURES_KEY, LABELS_KEY, SCORES_KEY), partition=day.isoformat()
    )
    if not result.success:
        raise PipelineError(f"scores: {_failure(result)}")
    materialized = result.asset_materializations_for_node("gold__failure_scores")
    return {key: _plain(value) for key, value in materialized[-1].metadata.items() if not key.startswith("probab")}


def build_features(
    settings: Settings,
    first_day: dt.date,
    last_day: dt.date,
    *,
    instance: dg.DagsterInstance | None = None,
    progress: Progress = lambda _message: None,
    log_level: str = "WARNING",
) -> dict[str, Any]:
    """Feature backfill: ground truth, then features and labels of ``first_day .. last_day`` in one run."""
    runner = _Runner(settings, instance, log_level)
    progress(f"ground truth, features and labels of {first_day} .. {last_day} ...")
    result = runner.run(
        dg.AssetSelection.assets(GROUND_TRUTH_KEY, FEATURES_KEY, LABELS_KEY), tags=_range_tags(first_day, last_day)
    )
    if not result.success:
        raise PipelineError(f"features: {_failure(result)}")
    out = {}
    for node in ("gold__failure_features", "gold__failure_labels"):
        materialized = result.asset_materializations_for_node(node)
        out[node.removeprefix("gold__")] = {
            key: _plain(value) for key, value in materialized[-1].metadata.items() if key != "preview"
        }
    return out
