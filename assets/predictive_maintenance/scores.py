"""Batch scoring: the champion's failure probabilities for one day of feature rows (``gold/failure_scores``).

The model is :func:`plantstream.models.serving.load_champion` and the features are
``gold/failure_features``: the seam and the feature definition the stream's inference
uses, so a batch score equals the stream's score for the same machine and time
(``tests/models/test_failure_lifecycle.py`` checks it against ``OnlineFeatures``).  Where
the day has labels already, the precision of the day's alerts is reported beside it:
the drift sensor's "degraded precision" trigger reads it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from plantstream.assets.predictive_maintenance.tables import read_feature_day, read_label_day
from plantstream.contract.columns import TIMESTAMP_MS_UTC
from plantstream.models.serving import ServingModel
from plantstream.orchestration.resources import Lake

SCORES_TABLE = "failure_scores"
SCORES_SCHEMA = pa.schema(
    [
        pa.field("day", pa.date32()),
        pa.field("machine_id", pa.string()),
        pa.field("ts", TIMESTAMP_MS_UTC),
        pa.field("probability", pa.float64()),
        pa.field("alert", pa.bool_()),
        pa.field("threshold", pa.float64()),
        pa.field("horizon_min", pa.int32()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("warm", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class ScoredDay:
    rows: pa.Table
    alerts: int
    precision: float | None  # of the alerts against the day's labels (None: no labels or no alerts yet)


def alert_precision(scores: pd.DataFrame, labels: pd.DataFrame) -> float | None:
    """Share of alerted samples whose label is 1, over the samples that have a label."""
    joined = scores.merge(labels, on=["machine_id", "ts"], how="inner")
    alerted = joined.loc[joined["alert"]]
    return float(alerted["label"].mean()) if len(alerted) else None


def score_day(lake: Lake, model: ServingModel, day: dt.date) -> ScoredDay:
    features = read_feature_day(lake, day)
    probability = model.predict_proba(features) if len(features) else np.empty(0)
    alert = probability >= model.threshold
    n = len(features)
    rows = pa.Table.from_pydict(
        {
            "day": pa.array(np.full(n, day), pa.date32()),
            "machine_id": pa.array(features["machine_id"].to_numpy(), pa.string()),
            "ts": pa.array(features["ts"].to_numpy(dtype=np.int64)).cast(TIMESTAMP_MS_UTC),
            "probability": pa.array(probability, pa.float64()),
            "alert": pa.array(alert, pa.bool_()),
            "threshold": pa.array(np.full(n, model.threshold), pa.float64()),
            "horizon_min": pa.array(np.full(n, model.horizon_min, dtype=np.int32)),
            "model_name": pa.array([model.name] * n, pa.string()),
            "model_version": pa.array([model.version] * n, pa.string()),
            "warm": pa.array(features["warm"].to_numpy(dtype=bool)),
        },
        schema=SCORES_SCHEMA,
    )
    scored = pd.DataFrame({"machine_id": features["machine_id"], "ts": features["ts"], "alert": alert})
    return ScoredDay(rows, int(alert.sum()), alert_precision(scored, read_label_day(lake, day)))
