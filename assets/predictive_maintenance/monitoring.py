"""Is the champion still fit?  Feature drift and degraded precision, read from the lake and the registry.

:func:`evaluate_champion` compares the newest complete day (before today, UTC) with what
the champion was trained on:

* **drift**: the PSI of each feature of that day of ``gold/failure_features`` against the
  champion's training part (the ``drift_reference.json`` logged with it,
  :mod:`plantstream.models.drift`); drift when at least ``drift_min_features`` features
  reach ``drift_psi_threshold``;
* **precision**: the precision of the champion's alerts of the newest day that has both
  scores (``gold/failure_scores``, scored by that champion) and labels, against the
  precision it had on its test part (version tag ``plantstream.test_precision``);
  degraded when it is more than ``precision_drop`` lower, over at least
  :data:`MIN_ALERTS` alerts.  (The stream's live alerts against confirmed failures are
  the same figure once inference runs in the stream; batch scores are what exists now.)

The sensor ``failure_model_drift`` turns a finding into a retraining run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from plantstream.assets.predictive_maintenance.features import FEATURES_TABLE
from plantstream.assets.predictive_maintenance.scores import SCORES_TABLE, alert_precision
from plantstream.assets.predictive_maintenance.tables import days_in, read_feature_day, read_label_day
from plantstream.contract.columns import TIMESTAMP_MS_UTC
from plantstream.models.drift import drifting, population_stability
from plantstream.orchestration.resources import Lake

MIN_ALERTS = 50
"""Fewer alerts than this in a day say nothing about precision."""


@dataclass(frozen=True)
class ChampionHealth:
    champion: str | None
    day: str | None  # the day the features were checked on
    psi: dict[str, float] = field(default_factory=dict)
    drifting: dict[str, float] = field(default_factory=dict)
    precision_day: str | None = None
    precision: float | None = None
    test_precision: float | None = None
    alerts: int = 0
    reasons: list[str] = field(default_factory=list)

    @property
    def retrain(self) -> bool:
        return bool(self.reasons)


def _scores_day(lake: Lake, day: dt.date, champion: str) -> pd.DataFrame | None:
    table = lake.table("gold", SCORES_TABLE)
    if table is None:
        return None
    rows = table.to_pyarrow_dataset().to_table(
        columns=["machine_id", "ts", "alert", "model_version"], filter=pc.field("day") == pa.scalar(day, pa.date32())
    )
    rows = rows.filter(pc.equal(rows["model_version"], champion))
    if not rows.num_rows:
        return None
    frame = rows.select(["machine_id", "alert"]).to_pandas()
    frame["ts"] = rows["ts"].cast(TIMESTAMP_MS_UTC).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return frame


def evaluate_champion(lake: Lake, *, today: dt.date | None = None) -> ChampionHealth:
    """Drift and precision of the current champion (see the module docstring)."""
    import mlflow.artifacts

    from plantstream.connect.mlflow import mlflow_client
    from plantstream.models.registry import TAG_TEST_PRECISION
    from plantstream.models.serving import champion_version

    settings = lake.settings
    models = settings.models
    today = today or dt.datetime.now(dt.UTC).date()
    champion = champion_version(settings)
    if champion is None:
        return ChampionHealth(None, None)
    features = lake.table("gold", FEATURES_TABLE)
    days = [d for d in days_in(features) if d < today] if features is not None else []
    if not days:
        return ChampionHealth(champion, None)
    day = days[-1]
    version = mlflow_client(settings).get_model_version(models.registered_model, champion)
    reference = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/drift_reference.json")
    rows = read_feature_day(lake, day)
    psi = population_stability(reference, rows.loc[rows["warm"]]) if rows["warm"].any() else {}
    found = drifting(psi, models.drift_psi_threshold)
    reasons = []
    if len(found) >= models.drift_min_features:
        top = ", ".join(f"{name} {value:.2f}" for name, value in list(found.items())[:5])
        reasons.append(
            f"{len(found)} features drifted on {day} (PSI >= {models.drift_psi_threshold} against the training "
            f"window of v{champion}): {top}"
        )
    test_precision = float(version.tags[TAG_TEST_PRECISION]) if TAG_TEST_PRECISION in version.tags else None
    precision = precision_day = None
    alerts = 0
    for candidate_day in reversed(days):
        scores = _scores_day(lake, candidate_day, champion)
        labels = read_label_day(lake, candidate_day)
        if scores is None or not len(labels):
            continue
        precision_day = candidate_day.isoformat()
        alerts = int(scores.merge(labels, on=["machine_id", "ts"])["alert"].sum())
        precision = alert_precision(scores, labels)
        break
    if (
        precision is not None
        and test_precision is not None
        and alerts >= MIN_ALERTS
        and precision < test_precision - models.precision_drop
    ):
        reasons.append(
            f"precision of v{champion}'s alerts on {precision_day} is {precision:.3f} ({alerts} alerts), "
            f"{test_precision - precision:.3f} below its test precision {test_precision:.3f}"
        )
    return ChampionHealth(
        champion=champion,
        day=day.isoformat(),
        psi=psi,
        drifting=found,
        precision_day=precision_day,
        precision=precision,
        test_precision=test_precision,
        alerts=alerts,
        reasons=reasons,
    )
