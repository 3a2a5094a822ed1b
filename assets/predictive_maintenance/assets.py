"""The predictive-maintenance assets (group ``predictive_maintenance``): thin Dagster wrappers.

``bronze/ground_truth`` (the simulator's failure / maintenance / fault log, imported) ->
``gold/failure_labels``; silver telemetry and events -> ``gold/failure_features`` (daily,
:mod:`plantstream.models.features`) -> ``models/failure_model`` (train, log to MLflow,
register, gate against the champion, promote and announce or refuse) ->
``gold/failure_scores`` (the champion's scores of a day, for reports).  The work is in
:mod:`.features`, :mod:`.ground_truth`, :mod:`.tables` and :mod:`plantstream.models`;
docs/predictive-maintenance.md describes the lifecycle.
"""

# No `from __future__ import annotations`: Dagster inspects the annotations at runtime.
import datetime as dt
import math
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from plantstream.assets.gold.assets import SINGLE_RUN, run_days, silver_days
from plantstream.assets.gold.calendar import GOLD_PARTITIONS
from plantstream.assets.gold.presentation import image_metadata, preview
from plantstream.assets.gold.tables import write_gold_day
from plantstream.assets.predictive_maintenance import ground_truth as gt
from plantstream.assets.predictive_maintenance.features import (
    FEATURES_SCHEMA,
    FEATURES_TABLE,
    LABELS_SCHEMA,
    LABELS_TABLE,
    feature_day,
    label_day,
)
from plantstream.assets.predictive_maintenance.scores import SCORES_SCHEMA, SCORES_TABLE, score_day
from plantstream.assets.predictive_maintenance.tables import read_feature_keys, training_window
from plantstream.models.plots import feature_importance_png, lead_time_png, probabilities_png
from plantstream.orchestration.resources import Lake
from plantstream.settings import Settings

GROUP = "predictive_maintenance"
OWNERS = ["team:predictive-maintenance"]
TABLE_KINDS = {"delta", "s3"}
RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
#: One training, gate and alias move at a time (two would race for the alias).
REGISTRY_POOL = "failure_model_registry"

GROUND_TRUTH_KEY = dg.AssetKey([gt.TIER, gt.NAME])
FEATURES_KEY = dg.AssetKey(["gold", FEATURES_TABLE])
LABELS_KEY = dg.AssetKey(["gold", LABELS_TABLE])
MODEL_KEY = dg.AssetKey(["models", "failure_model"])
SCORES_KEY = dg.AssetKey(["gold", SCORES_TABLE])
GATE_CHECK = "candidate_promoted"


def _schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


def _days_text(days: list[dt.date]) -> str:
    return ", ".join(d.isoformat() for d in days[:5]) + (" ..." if len(days) > 5 else "")


def _plot_path(settings: Settings, name: str):
    return settings.state_dir / "models" / "plots" / f"{name}.png"


def _iso(ms: int | None) -> str:
    return "-" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def _num(value: float) -> dg.MetadataValue:
    return dg.MetadataValue.float(float(value)) if math.isfinite(float(value)) else dg.MetadataValue.text("nan")


@dg.asset(
    key=GROUND_TRUTH_KEY,
    group_name=GROUP,
    owners=OWNERS,
    kinds=TABLE_KINDS,
    retry_policy=RETRY,
    description="The plant's ground truth: failures (mode, repair time), tool changes and other maintenance, planned "
    "downtime, injected sensor and device faults, and state changes, imported from the simulator's append-only "
    "ground-truth logs (**/ground_truth.jsonl under PLANTSTREAM_MODELS__GROUND_TRUTH_DIR, default "
    "<state_dir>/simulator). Incremental and exactly-once per log (the byte offset read is a Delta application "
    "transaction of the same commit). The labels of the failure model come from here.",
    metadata={
        "dagster/column_schema": _schema(gt.GROUND_TRUTH_SCHEMA),
        "partitioned_by": "event_date",
        "kinds_kept": ", ".join(gt.GROUND_TRUTH_KINDS),
    },
)
def ground_truth(context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake]) -> dg.MaterializeResult:
    directory = gt.ground_truth_dir(lake.settings)
    report = gt.import_ground_truth(lake, directory)
    context.log.info(f"ground truth: {report.rows_added:,} rows from {report.files} log(s) under {directory}")
    table = lake.table(gt.TIER, gt.NAME)
    counts = {}
    if table is not None:
        kinds = table.to_pyarrow_dataset().to_table(columns=["kind"]).group_by("kind").aggregate([("kind", "count")])
        counts = dict(zip(kinds["kind"].to_pylist(), kinds["kind_count"].to_pylist(), strict=True))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(sum(counts.values())),
            "dagster/uri": dg.MetadataValue.text(lake.table_uri(gt.TIER, gt.NAME)),
            "rows_added": dg.MetadataValue.int(report.rows_added),
            "logs": dg.MetadataValue.int(report.files),
            "bytes_read": dg.MetadataValue.int(report.bytes_read),
            "rows_by_kind": dg.MetadataValue.json(counts),
            "added_per_log": dg.MetadataValue.json(report.per_file),
            "directory": dg.MetadataValue.path(str(directory)),
            "delta_version": dg.MetadataValue.int(-1 if report.version is None else report.version),
        }
    )


@dg.asset(
    key=FEATURES_KEY,
    group_name=GROUP,
    owners=OWNERS,
    kinds=TABLE_KINDS,
    partitions_def=GOLD_PARTITIONS,
    backfill_policy=SINGLE_RUN,
    retry_policy=RETRY,
    deps=[silver_days("telemetry", before=1), silver_days("events", before=1)],
    description="Feature vectors of the failure model, one row per machine and sample time (every "
    "PLANTSTREAM_MODELS__SAMPLE_EVERY_MIN minutes while the machine runs): plantstream.models.features."
    "offline_features over 60 s window aggregates of silver telemetry (the stream's window definition) and the "
    "machine's history from silver events - the same definition the stream's OnlineFeatures computes. `warm` marks "
    "samples whose machine has at least 8 h of history in the lake (training uses only those). A day is replaced "
    "atomically; a backfilled range runs as one step.",
    metadata={"dagster/column_schema": _schema(FEATURES_SCHEMA), "partitioned_by": "day (UTC)"},
)
def failure_features(
    context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake], settings: dg.ResourceParam[Settings]
) -> dg.MaterializeResult:
    days = run_days(context)
    written = machines = minutes = cold = 0
    last = FEATURES_SCHEMA.empty_table()
    for day in days:
        result = feature_day(lake, day, every_min=settings.models.sample_every_min)
        written += write_gold_day(lake, FEATURES_TABLE, day, result.rows)
        machines = max(machines, result.machines)
        minutes += result.minute_rows
        cold += int(pc.sum(pc.invert(result.rows["warm"])).as_py() or 0) if result.rows.num_rows else 0
        last = result.rows
        context.log.info(f"{day}: {result.rows.num_rows:,} feature rows of {result.machines} machines")
    missing = {
        name: round(float(pc.mean(pc.is_nan(last[name])).as_py() or 0.0), 3)
        for name in ("torque_last", "tool_wear_last", "temp_margin_last", "vibration_last", "minutes_since_repair")
    }
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(written),
            "dagster/uri": dg.MetadataValue.text(lake.table_uri("gold", FEATURES_TABLE)),
            "days": dg.MetadataValue.text(_days_text(days)),
            "machines": dg.MetadataValue.int(machines),
            "cold_samples": dg.MetadataValue.int(cold),
            "minute_aggregate_rows": dg.MetadataValue.int(minutes),
            "features": dg.MetadataValue.int(len(FEATURES_SCHEMA) - 4),
            "missing_share_last_day": dg.MetadataValue.json(missing),
            "preview": preview(last, ["machine_id", "ts", "warm", "vibration_last", "temp_margin_last", "power_last"]),
        }
    )


@dg.asset(
    key=LABELS_KEY,
    group_name=GROUP,
    owners=OWNERS,
    kinds=TABLE_KINDS,
    partitions_def=GOLD_PARTITIONS,
    backfill_policy=SINGLE_RUN,
    retry_policy=RETRY,
    deps=[FEATURES_KEY, GROUND_TRUTH_KEY],
    description="Labels of the feature rows: 1 if the machine's next failure (bronze/ground_truth) is within H "
    "minutes (PLANTSTREAM_MODELS__HORIZON_MIN), with the failure mode and the minutes to it kept for analysis. "
    "Samples inside a repair, planned downtime or maintenance are dropped, and so are samples whose label window "
    "reaches past what the ground truth knows yet (materialise the day again when it does).",
    metadata={"dagster/column_schema": _schema(LABELS_SCHEMA), "partitioned_by": "day (UTC)"},
)
def failure_labels(
    context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake], settings: dg.ResourceParam[Settings]
) -> dg.MaterializeResult:
    days = run_days(context)
    written = positives = samples = dropped_downtime = dropped_unknown = 0
    modes: dict[str, int] = {}
    known_until = None
    for day in days:
        result = label_day(lake, day, read_feature_keys(lake, day), horizon_min=settings.models.horizon_min)
        written += write_gold_day(lake, LABELS_TABLE, day, result.rows)
        positives += int(pc.sum(result.rows["label"]).as_py() or 0)
        samples += result.samples
        dropped_downtime += result.dropped_downtime
        dropped_unknown += result.dropped_unknown
        known_until = result.known_until_ms
        positive_modes = result.rows.filter(pc.equal(result.rows["label"], 1))["failure_mode"].to_pylist()
        for mode in positive_modes:
            modes[mode] = modes.get(mode, 0) + 1
        if result.dropped_unknown:
            context.log.warning(
                f"{day}: {result.dropped_unknown} samples have no label yet (the ground truth ends at "
                f"{_iso(known_until)}); materialise this day again when bronze/ground_truth has more"
            )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(written),
            "dagster/uri": dg.MetadataValue.text(lake.table_uri("gold", LABELS_TABLE)),
            "days": dg.MetadataValue.text(_days_text(days)),
            "horizon_min": dg.MetadataValue.int(settings.models.horizon_min),
            "positives": dg.MetadataValue.int(positives),
            "prevalence": _num(positives / written if written else float("nan")),
            "samples": dg.MetadataValue.int(samples),
            "dropped_in_downtime": dg.MetadataValue.int(dropped_downtime),
            "dropped_label_unknown": dg.MetadataValue.int(dropped_unknown),
            "positive_samples_by_mode": dg.MetadataValue.json(dict(sorted(modes.items()))),
        }
    )


class FailureModelConfig(dg.Config):
    """What to train on.  Empty days: the last PLANTSTREAM_MODELS__TRAINING_DAYS days with labels; versions
    (-1: current) pin the Delta tables to reproduce an earlier training exactly."""

    first_day: str = Field("", description="YYYY-MM-DD; empty: training_days before last_day")
    last_day: str = Field("", description="YYYY-MM-DD; empty: the newest labelled day")
    features_version: int = Field(-1, description="Delta version of gold/failure_features (-1: current)")
    labels_version: int = Field(-1, description="Delta version of gold/failure_labels (-1: current)")
    seed: int = 0
    max_iter: int = Field(300, ge=1)
    importance_repeats: int = Field(3, ge=1)
    negative_control_seed: int = Field(
        -1,
        description="Gate self-test: >= 0 trains on training/validation labels permuted with this seed; the gate "
        "must refuse the result, and it is never promoted (-1: off)",
    )


@dg.asset(
    key=MODEL_KEY,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"mlflow", "scikitlearn"},
    deps=[FEATURES_KEY, LABELS_KEY],
    pool=REGISTRY_POOL,
    check_specs=[
        dg.AssetCheckSpec(
            GATE_CHECK,
            asset=MODEL_KEY,
            blocking=True,
            description="Fails (ERROR, blocking: the run fails) when the gate refuses the candidate; the champion "
            "alias then stays where it was. The metadata says which check of the gate failed and by how much.",
        )
    ],
    description="One round of the failure model's lifecycle (plantstream.models.lifecycle): train a calibrated "
    "gradient-boosting model on the labelled features of the training window (time split with purge, threshold at "
    "max F1 on validation), score the engineer's rule on the same test period, log everything to MLflow (params, "
    "metrics, signature, input example, plots, the Delta versions trained on) and register the candidate; the gate "
    "then scores the registered candidate and the current champion on the candidate's held-out period and moves the "
    "`champion` alias only if the candidate wins by PLANTSTREAM_MODELS__GATE_MARGIN. A promotion is announced on "
    "factory.models.promotions. A refusal fails the check candidate_promoted (and so the run).",
    metadata={"registry": "MLflow model registry, alias champion", "announces_on": "factory.models.promotions"},
)
def failure_model(
    context: dg.AssetExecutionContext,
    config: FailureModelConfig,
    lake: dg.ResourceParam[Lake],
    settings: dg.ResourceParam[Settings],
) -> Iterator[dg.MaterializeResult]:
    from plantstream.models.lifecycle import train_register_gate
    from plantstream.models.training import TrainingConfig

    window = training_window(
        lake,
        days=settings.models.training_days,
        first_day=dt.date.fromisoformat(config.first_day) if config.first_day else None,
        last_day=dt.date.fromisoformat(config.last_day) if config.last_day else None,
        features_version=None if config.features_version < 0 else config.features_version,
        labels_version=None if config.labels_version < 0 else config.labels_version,
    )
    context.log.info(f"training window: {window.describe()}")
    outcome = train_register_gate(
        settings,
        window.frame,
        TrainingConfig(seed=config.seed, max_iter=config.max_iter, importance_repeats=config.importance_repeats),
        data={
            "window": f"{window.first_day}..{window.last_day}",
            "first_day": window.first_day.isoformat(),
            "last_day": window.last_day.isoformat(),
            "samples": len(window.frame),
            "cold_samples_left_out": window.cold_samples,
            "sample_every_min": settings.models.sample_every_min,
            **{f"uri.{k}": v for k, v in window.uris.items()},
        },
        versions=window.versions,
        negative_control_seed=None if config.negative_control_seed < 0 else config.negative_control_seed,
        progress=context.log.info,
    )
    summary = outcome.summary()
    decision = outcome.decision
    if not outcome.promoted:
        context.log.error(
            f"GATE REFUSED candidate {outcome.candidate.model_uri}: {decision.reason}. The champion stays "
            f"v{decision.champion_version}."
        )
    figures = {
        **{f"candidate_{k}": _num(v) for k, v in decision.candidate.items()},
        **{f"champion_{k}": _num(v) for k, v in (decision.champion or {}).items()},
    }
    gate_metadata = {
        "decision": dg.MetadataValue.text("promoted" if outcome.promoted else "refused"),
        "reason": dg.MetadataValue.text(decision.reason),
        "checks": dg.MetadataValue.json(decision.checks),
        "margin": dg.MetadataValue.float(decision.margin),
        **figures,
    }
    result = outcome.result
    yield dg.MaterializeResult(
        asset_key=MODEL_KEY,
        metadata={
            "promoted": dg.MetadataValue.bool(outcome.promoted),
            "model_version": dg.MetadataValue.text(outcome.candidate.version),
            "champion_version": dg.MetadataValue.text(outcome.champion_after or ""),
            "previous_champion_version": dg.MetadataValue.text(decision.champion_version or ""),
            "gate_reason": dg.MetadataValue.text(decision.reason),
            "gate_checks": dg.MetadataValue.json(decision.checks),
            "negative_control": dg.MetadataValue.bool(outcome.negative_control),
            "pr_auc": _num(summary["pr_auc"]),
            "roc_auc": _num(summary["roc_auc"]),
            "f1": _num(summary["f1"]),
            "precision": _num(summary["precision"]),
            "recall": _num(summary["recall"]),
            "threshold": _num(result.threshold),
            "baseline_f1": _num(summary["baseline_f1"]),
            "baseline_tuned_f1": _num(summary["baseline_tuned_f1"]),
            "median_lead_time_min": _num(summary["median_lead_time_min"]),
            "lead_time_p25_min": _num(result.metrics["lead_time_p25_min"]),
            "lead_time_p75_min": _num(result.metrics["lead_time_p75_min"]),
            "failure_detection_rate": _num(summary["failure_detection_rate"]),
            "training_window": dg.MetadataValue.text(window.describe()),
            "delta_versions": dg.MetadataValue.json(window.versions),
            "split": dg.MetadataValue.json(result.split.as_dict()),
            "counts": dg.MetadataValue.json(result.counts),
            "seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in outcome.seconds.items()}),
            "mlflow_run": dg.MetadataValue.url(outcome.candidate.run_url),
            "model_uri": dg.MetadataValue.text(outcome.candidate.model_uri),
            "top_features": dg.MetadataValue.json(result.feature_importances.head(10).to_dict("records")),
            **image_metadata(
                feature_importance_png(result.feature_importances),
                "feature_importance",
                _plot_path(settings, f"feature-importance-v{outcome.candidate.version}"),
            ),
            **image_metadata(
                lead_time_png(result.lead_times, result.config.horizon_min),
                "lead_time",
                _plot_path(settings, f"lead-time-v{outcome.candidate.version}"),
            ),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=GATE_CHECK,
                passed=outcome.promoted,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=gate_metadata,
                description=decision.reason,
            )
        ],
    )


@dg.asset(
    key=SCORES_KEY,
    group_name=GROUP,
    owners=OWNERS,
    kinds=TABLE_KINDS,
    partitions_def=GOLD_PARTITIONS,
    backfill_policy=SINGLE_RUN,
    retry_policy=RETRY,
    deps=[FEATURES_KEY, MODEL_KEY],
    description="The champion's failure probabilities for every feature row of the day (for reports), with the "
    "alert at its threshold and the model version that scored it: models:/<model>@champion applied to "
    "gold/failure_features, the same model and features the stream scores online (equal for the same rows, tested).",
    metadata={"dagster/column_schema": _schema(SCORES_SCHEMA), "partitioned_by": "day (UTC)"},
)
def failure_scores(
    context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake], settings: dg.ResourceParam[Settings]
) -> dg.MaterializeResult:
    from plantstream.models.serving import load_champion

    model = load_champion(settings)
    days = run_days(context)
    written = alerts = 0
    last = SCORES_SCHEMA.empty_table()
    precision = {}
    for day in days:
        scored = score_day(lake, model, day)
        written += write_gold_day(lake, SCORES_TABLE, day, scored.rows)
        alerts += scored.alerts
        last = scored.rows
        if scored.precision is not None:
            precision[day.isoformat()] = round(scored.precision, 4)
        context.log.info(f"{day}: {scored.rows.num_rows:,} rows scored by v{model.version}, {scored.alerts:,} alerts")
    probabilities = last["probability"].to_numpy(zero_copy_only=False) if last.num_rows else np.empty(0)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(written),
            "dagster/uri": dg.MetadataValue.text(lake.table_uri("gold", SCORES_TABLE)),
            "days": dg.MetadataValue.text(_days_text(days)),
            "model_version": dg.MetadataValue.text(model.version),
            "threshold": dg.MetadataValue.float(model.threshold),
            "alerts": dg.MetadataValue.int(alerts),
            "alert_rate": _num(alerts / written if written else float("nan")),
            "precision_vs_labels": dg.MetadataValue.json(precision),
            **image_metadata(
                probabilities_png(probabilities, model.threshold, model.version) if len(probabilities) else None,
                "probabilities",
                _plot_path(settings, f"scores-{days[-1].isoformat()}"),
            ),
        }
    )


PREDICTIVE_MAINTENANCE_ASSETS = [ground_truth, failure_features, failure_labels, failure_model, failure_scores]
