"""The failure model in MLflow: candidate runs, the registry, the ``champion`` alias, announcements.

* :func:`log_candidate`: one MLflow run per training (parameters, held-out metrics, the
  baseline's metrics on the same period, the Delta versions trained on, plots, the feature
  importances, the lead times, the drift reference) and the model, registered as a new
  version of ``PLANTSTREAM_MODELS__REGISTERED_MODEL`` with its signature, an input example
  and the tags a servable version carries (:mod:`plantstream.models.serving`).  Every
  candidate is registered, promoted or not: the registry is the audit trail.
* :func:`record_decision`: the gate's decision and figures as tags on the version and the run.
* :func:`promote` / :func:`rollback`: move the ``champion`` alias, remember where it
  pointed before (version tag ``plantstream.previous_champion``, which makes rollback a
  walk back along the promotions), and announce the move on ``factory.models.promotions``.

MLflow 3.17 specifics (docs/predictive-maintenance.md): the default skops format refuses
the tree model unless its types are trusted (``SKOPS_TRUSTED_TYPES``); pip requirements are
given, not inferred (inference starts a subprocess that imports the model: seconds).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from plantstream.contract.promotions import ModelPromotion, PromotionAction, encode_promotion
from plantstream.models.features import feature_matrix
from plantstream.models.gate import GateDecision
from plantstream.models.serving import CHAMPION, TAG_HORIZON, TAG_THRESHOLD, champion_version
from plantstream.models.training import SKOPS_TRUSTED_TYPES, TrainingResult
from plantstream.settings import Settings

TAG_SEEN_UNTIL = "plantstream.seen_until_ms"  # training and calibration saw data before this (test start)
TAG_TEST_PRECISION = "plantstream.test_precision"
TAG_PREVIOUS = "plantstream.previous_champion"
TAG_PROMOTED_AT = "plantstream.promoted_at"
TAG_ROLLED_BACK_AT = "plantstream.rolled_back_at"
TAG_NEGATIVE_CONTROL = "plantstream.negative_control"
TAG_DECISION = "plantstream.gate.decision"  # promoted / refused
TAG_REASON = "plantstream.gate.reason"
TAG_DELTA = "plantstream.delta."  # + table: the Delta version trained on
MODEL_TAG_ANNOUNCEMENTS = "plantstream.announcements"  # on the registered model: announcements so far
ANNOUNCE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Candidate:
    """A trained model as logged and registered."""

    name: str
    version: str
    run_id: str
    experiment_id: str
    model_uri: str  # models:/<name>/<version>
    run_url: str


def _finite(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(float(value)):
            out[f"{prefix}{key}"] = float(value)
    return out


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}" for dist in ("scikit-learn", "skops", "numpy", "scipy", "pandas")]


def log_candidate(
    settings: Settings,
    result: TrainingResult,
    *,
    baselines: Mapping[str, Any],
    frame: pd.DataFrame,
    data: Mapping[str, Any],
    versions: Mapping[str, int],
    drift_reference: Mapping[str, Any],
    plots: Mapping[str, bytes],
    negative_control: bool = False,
) -> Candidate:
    """Log ``result`` as one MLflow run and register it as a new version (see the module docstring).

    ``frame``: the labelled frame it was trained on (the input example is taken from its test
    part); ``data``: what to say about the data (window, sizes) as parameters; ``versions``:
    Delta table -> version trained on.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from plantstream.connect.mlflow import mlflow_client, run_url, use_mlflow

    use_mlflow(settings)
    name = settings.models.registered_model
    experiment = mlflow.set_experiment(settings.models.experiment)
    parts = result.split.parts(frame["ts"].to_numpy())
    test = frame.loc[parts == "test"]
    example = test.loc[:, list(result.feature_names)].head(5)
    signature = infer_signature(
        example, result.model.predict_proba(feature_matrix(example, result.feature_names))[:, 1]
    )
    config = {f"config.{k}": v for k, v in asdict(result.config).items()}
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name=f"failure-model-{data['window']}") as run:
        mlflow.log_params(
            {**config, **{f"data.{k}": v for k, v in data.items()}, "features": len(result.feature_names)}
        )
        mlflow.log_params({f"split.{k}": v for k, v in result.split.as_dict().items()})
        mlflow.log_metrics(
            {
                **_finite(result.metrics, "test_"),
                **_finite(result.validation_metrics, "validation_"),
                **_finite(baselines["fixed"], "baseline_fixed_"),
                **_finite(baselines["tuned"], "baseline_tuned_"),
                **_finite(result.timings, "seconds_"),
                **_finite(result.counts, "count_"),
                "threshold": result.threshold,
            }
        )
        mlflow.set_tags(
            {
                **{f"{TAG_DELTA}{table}": str(version) for table, version in versions.items()},
                TAG_NEGATIVE_CONTROL: str(negative_control).lower(),
                "plantstream.horizon_min": str(result.config.horizon_min),
            }
        )
        mlflow.log_dict(result.feature_importances.to_dict("records"), "feature_importances.json")
        mlflow.log_dict(
            json.loads(result.lead_times.to_json(orient="records")), "lead_times.json"
        )  # per test failure: detected, lead_min
        mlflow.log_dict(dict(baselines), "baselines.json")
        mlflow.log_dict(dict(drift_reference), "drift_reference.json")
        with tempfile.TemporaryDirectory(prefix="plantstream-plots-") as folder:
            for plot, png in plots.items():
                path = Path(folder) / f"{plot}.png"
                path.write_bytes(png)
                mlflow.log_artifact(str(path), "plots")
        with warnings.catch_warnings():
            # MLflow checks the input example by scoring it as a DataFrame; the model was fitted on arrays.
            warnings.filterwarnings("ignore", message="X has feature names")
            info = mlflow.sklearn.log_model(
                result.model,
                name="model",
                signature=signature,
                input_example=example,
                registered_model_name=name,
                skops_trusted_types=list(SKOPS_TRUSTED_TYPES),
                pyfunc_predict_fn="predict_proba",
                pip_requirements=_pip_requirements(),
            )
    version = str(info.registered_model_version)
    client = mlflow_client(settings)
    version_tags = {
        TAG_THRESHOLD: repr(float(result.threshold)),
        TAG_HORIZON: str(result.config.horizon_min),
        TAG_SEEN_UNTIL: str(result.split.test_start_ms),
        TAG_TEST_PRECISION: repr(float(result.metrics["precision"])),
        TAG_NEGATIVE_CONTROL: str(negative_control).lower(),
        **{f"{TAG_DELTA}{table}": str(v) for table, v in versions.items()},
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    return Candidate(
        name=name,
        version=version,
        run_id=run.info.run_id,
        experiment_id=experiment.experiment_id,
        model_uri=f"models:/{name}/{version}",
        run_url=run_url(settings, experiment.experiment_id, run.info.run_id),
    )


def record_decision(settings: Settings, candidate: Candidate, decision: GateDecision) -> None:
    """The gate's decision and figures as tags on the candidate's version and run, and ``gate.json``."""
    from plantstream.connect.mlflow import mlflow_client

    client = mlflow_client(settings)
    tags = {
        TAG_DECISION: "promoted" if decision.promote else "refused",
        TAG_REASON: decision.reason[:5000],
        "plantstream.gate.margin": repr(decision.margin),
        "plantstream.gate.champion_version": decision.champion_version or "",
        **{f"plantstream.gate.check.{k}": str(v).lower() for k, v in decision.checks.items()},
        **{f"plantstream.gate.candidate.{k}": repr(v) for k, v in decision.candidate.items()},
        **{f"plantstream.gate.champion.{k}": repr(v) for k, v in (decision.champion or {}).items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(candidate.name, candidate.version, key, value)
        client.set_tag(candidate.run_id, key, value)
    client.log_dict(candidate.run_id, decision.as_dict(), "gate.json")


def _next_announcement(settings: Settings, name: str) -> int:
    from plantstream.connect.mlflow import mlflow_client

    client = mlflow_client(settings)
    seq = int(client.get_registered_model(name).tags.get(MODEL_TAG_ANNOUNCEMENTS, "0")) + 1
    client.set_registered_model_tag(name, MODEL_TAG_ANNOUNCEMENTS, str(seq))
    return seq


def announce(settings: Settings, promotion: ModelPromotion) -> None:
    """Publish ``promotion`` on ``factory.models.promotions`` (keyed by the model's name); raises if undelivered."""
    from plantstream.connect.kafka import producer
    from plantstream.connect.topics import ensure_topics
    from plantstream.contract.topics import MODEL_PROMOTIONS, topic_name

    ensure_topics(settings, (MODEL_PROMOTIONS,))
    client = producer(settings, log_level=4)  # librdkafka: warnings and worse
    errors: list[str] = []

    def delivered(error, _message) -> None:
        if error is not None:
            errors.append(str(error))

    client.produce(
        topic_name(settings, MODEL_PROMOTIONS),
        key=promotion.model.encode(),
        value=encode_promotion(promotion),
        on_delivery=delivered,
    )
    left = client.flush(ANNOUNCE_TIMEOUT_S)
    if left or errors:
        raise RuntimeError(
            f"the champion alias of {promotion.model} moved to v{promotion.version}, but announcing it on "
            f"{topic_name(settings, MODEL_PROMOTIONS)} failed ({errors or 'not delivered in time'}); consumers that "
            "poll the registry see it anyway"
        )


def _move_alias(
    settings: Settings,
    version: str,
    *,
    action: PromotionAction,
    reason: str,
    metrics: Mapping[str, float],
) -> ModelPromotion:
    from plantstream.connect.mlflow import mlflow_client

    name = settings.models.registered_model
    client = mlflow_client(settings)
    target = client.get_model_version(name, version)
    previous = champion_version(settings, name)
    client.set_registered_model_alias(name, CHAMPION, version)
    now_ms = int(time.time() * 1000)
    if action is PromotionAction.PROMOTE:
        client.set_model_version_tag(name, version, TAG_PREVIOUS, previous or "")
        client.set_model_version_tag(name, version, TAG_PROMOTED_AT, str(now_ms))
    elif previous is not None:
        client.set_model_version_tag(name, previous, TAG_ROLLED_BACK_AT, str(now_ms))
    promotion = ModelPromotion(
        model=name,
        alias=CHAMPION,
        version=version,
        previous_version=previous,
        action=action,
        model_uri=f"models:/{name}/{version}",
        run_id=target.run_id or "",
        threshold=float(target.tags[TAG_THRESHOLD]),
        horizon_min=int(target.tags[TAG_HORIZON]),
        seq=_next_announcement(settings, name),
        ts=now_ms,
        reason=reason[:2048],
        metrics={k: float(v) for k, v in metrics.items() if math.isfinite(float(v))},
    )
    announce(settings, promotion)
    return promotion


def promote(settings: Settings, candidate: Candidate, decision: GateDecision) -> ModelPromotion:
    """Point ``champion`` at the candidate the gate let through, and announce it."""
    if not decision.promote:
        raise ValueError(f"the gate refused {candidate.model_uri}: {decision.reason}")
    return _move_alias(
        settings, candidate.version, action=PromotionAction.PROMOTE, reason=decision.reason, metrics=decision.candidate
    )


def rollback(settings: Settings, *, to_version: str | None = None, reason: str = "") -> ModelPromotion:
    """Point ``champion`` back at the version it pointed to before the current champion was promoted
    (or at ``to_version``), and announce it.  Raises ``LookupError`` if there is nowhere to go."""
    from plantstream.connect.mlflow import mlflow_client

    name = settings.models.registered_model
    current = champion_version(settings, name)
    if current is None:
        raise LookupError(f"registered model {name!r} has no champion to roll back")
    client = mlflow_client(settings)
    if to_version is None:
        to_version = client.get_model_version(name, current).tags.get(TAG_PREVIOUS, "")
        if not to_version:
            raise LookupError(f"{name} v{current} was the first champion: there is no earlier one to roll back to")
    to_version = str(to_version)
    if to_version == current:
        raise ValueError(f"{name} v{current} is the champion already")
    target = client.get_model_version(name, to_version)
    if TAG_THRESHOLD not in target.tags or target.tags.get(TAG_NEGATIVE_CONTROL) == "true":
        raise ValueError(f"{name} v{to_version} cannot be served (no threshold, or a negative control)")
    return _move_alias(
        settings,
        to_version,
        action=PromotionAction.ROLLBACK,
        reason=reason or f"rollback from v{current}",
        metrics={},
    )


def read_announcements(settings: Settings, *, timeout_s: float = 30.0) -> list[ModelPromotion]:
    """Every announcement on ``factory.models.promotions`` so far, in partition and offset order.

    Reads each partition to its end (``enable.partition.eof``, not the broker's high
    watermark) without a consumer group: nothing is committed.
    """
    from confluent_kafka import KafkaError, TopicPartition

    from plantstream.connect.kafka import consumer
    from plantstream.contract.promotions import decode_promotion
    from plantstream.contract.topics import MODEL_PROMOTIONS, topic_name

    name = topic_name(settings, MODEL_PROMOTIONS)
    client = consumer(settings, **{"enable.partition.eof": True, "group.id": "plantstream-announcements-reader"})
    try:
        metadata = client.list_topics(name, timeout=timeout_s).topics.get(name)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return []
        client.assign([TopicPartition(name, p, 0) for p in metadata.partitions])
        open_partitions = set(metadata.partitions)
        found: list[tuple[int, int, ModelPromotion]] = []
        deadline = time.monotonic() + timeout_s
        while open_partitions:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: partitions {sorted(open_partitions)} not read to the end in {timeout_s} s")
            message = client.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard(message.partition())
                    continue
                raise RuntimeError(f"{name}: {message.error()}")
            found.append((message.partition(), message.offset(), decode_promotion(message.value())))
        return [promotion for _, _, promotion in sorted(found, key=lambda item: item[:2])]
    finally:
        client.close()


@dataclass(frozen=True)
class VersionSummary:
    version: str
    champion: bool
    decision: str
    reason: str
    promoted_at: str
    previous_champion: str
    created_ms: int


def versions(settings: Settings, *, limit: int = 20) -> list[VersionSummary]:
    """The newest registered versions with their gate decisions (``plantstream model status``)."""
    from plantstream.connect.mlflow import mlflow_client

    name = settings.models.registered_model
    client = mlflow_client(settings)
    current = champion_version(settings, name)
    found = client.search_model_versions(f"name='{name}'", max_results=limit, order_by=["version_number DESC"])
    return [
        VersionSummary(
            version=str(mv.version),
            champion=str(mv.version) == current,
            decision=mv.tags.get(TAG_DECISION, ""),
            reason=mv.tags.get(TAG_REASON, ""),
            promoted_at=mv.tags.get(TAG_PROMOTED_AT, ""),
            previous_champion=mv.tags.get(TAG_PREVIOUS, ""),
            created_ms=int(mv.creation_timestamp or 0),
        )
        for mv in found
    ]


__all__ = [
    "Candidate",
    "VersionSummary",
    "announce",
    "log_candidate",
    "promote",
    "read_announcements",
    "record_decision",
    "rollback",
    "versions",
]
