"""The seam for inference: load the champion from the registry and score feature vectors.

This is what the stream's inference branch (and batch scoring, ``gold/failure_scores``)
calls; nothing else is needed from the training side:

```python
from plantstream.models.serving import load_champion, champion_version

model = load_champion(settings)                 # models:/<registered model>@champion
state = OnlineFeatures(machine_id)              # plantstream.models.features, one per machine
...
p = model.score(state.features(as_of_ms))       # probability of failing within model.horizon_min
if model.alerts(p): ...                         # MaintenanceRequired, with model.version
if champion_version(settings) != model.version:  # ~6 ms: cheap enough to poll
    model = load_champion(settings)
```

A servable version carries, as MLflow model-version tags written when it was registered,
its decision threshold and horizon; its feature columns are its MLflow signature's inputs
(in :data:`~plantstream.models.features.FEATURE_NAMES` order when it was trained).  A
version without them cannot be served, and :func:`load_version` says so.  Announcements
of alias moves are :class:`plantstream.contract.promotions.ModelPromotion` messages on
``factory.models.promotions`` (:data:`plantstream.contract.topics.MODEL_PROMOTIONS`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from plantstream.models.features import feature_matrix
from plantstream.settings import Settings

CHAMPION = "champion"
#: Model-version tags a servable version carries (set by :mod:`plantstream.models.registry`).
TAG_THRESHOLD = "plantstream.threshold"
TAG_HORIZON = "plantstream.horizon_min"
SCORING_THREADS = 1


@dataclass(frozen=True)
class ServingModel:
    """One registered model version, loaded, with what it takes to turn a score into an alert."""

    name: str
    version: str
    model: Any  # the calibrated scikit-learn classifier (predict_proba)
    threshold: float
    horizon_min: int
    feature_names: tuple[str, ...]
    run_id: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Probabilities for rows of :attr:`feature_names` columns (float64, NaN = missing).

        One OpenMP thread, as in training: on a shared machine sklearn's default (all cores)
        spends ~5 ms per tree waiting for busy cores, 100x the work of a few rows.
        """
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=SCORING_THREADS, user_api="openmp"):
            return self.model.predict_proba(matrix)[:, 1]

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """Probability of failing within ``horizon_min`` for each row of a feature frame."""
        return self.predict_matrix(feature_matrix(features, self.feature_names))

    def score(self, vector: Mapping[str, float]) -> float:
        """The probability for one feature vector (``OnlineFeatures.features(as_of)``)."""
        row = np.array([[vector[name] for name in self.feature_names]], dtype=np.float64)
        return float(self.predict_matrix(row)[0])

    def alerts(self, probability: float | np.ndarray) -> bool | np.ndarray:
        """Alert where the probability reaches the threshold (the operating point chosen on validation)."""
        return probability >= self.threshold


def _client(settings: Settings):
    from plantstream.connect.mlflow import mlflow_client

    return mlflow_client(settings)


def champion_version(settings: Settings, name: str | None = None, *, alias: str = CHAMPION) -> str | None:
    """The version ``alias`` points to now, or ``None`` if it points nowhere (a cheap poll: one call)."""
    from mlflow.exceptions import MlflowException

    name = name or settings.models.registered_model
    try:
        return str(_client(settings).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None  # no such registered model, or no such alias on it
        raise


def load_version(settings: Settings, version: str, name: str | None = None) -> ServingModel:
    """Load ``models:/<name>/<version>`` with its threshold, horizon and feature columns."""
    import mlflow.models
    import mlflow.sklearn

    name = name or settings.models.registered_model
    client = _client(settings)
    mv = client.get_model_version(name, str(version))
    missing = [tag for tag in (TAG_THRESHOLD, TAG_HORIZON) if tag not in mv.tags]
    if missing:
        raise LookupError(f"model {name} v{version} lacks the tags {missing}: it was not registered by PlantStream")
    uri = f"models:/{name}/{version}"
    signature = mlflow.models.get_model_info(uri).signature
    if signature is None:
        raise LookupError(f"model {name} v{version} has no signature: its feature columns are unknown")
    threshold = float(mv.tags[TAG_THRESHOLD])
    if not math.isfinite(threshold):
        raise LookupError(f"model {name} v{version} has no finite threshold ({mv.tags[TAG_THRESHOLD]!r})")
    return ServingModel(
        name=name,
        version=str(mv.version),
        model=mlflow.sklearn.load_model(uri),
        threshold=threshold,
        horizon_min=int(mv.tags[TAG_HORIZON]),
        feature_names=tuple(signature.inputs.input_names()),
        run_id=mv.run_id or "",
    )


def load_champion(settings: Settings, name: str | None = None, *, alias: str = CHAMPION) -> ServingModel:
    """The version ``alias`` points to, loaded; ``LookupError`` if there is none yet."""
    name = name or settings.models.registered_model
    version = champion_version(settings, name, alias=alias)
    if version is None:
        raise LookupError(f"registered model {name!r} has no {alias!r} alias yet: train one (plantstream train)")
    return load_version(settings, version, name)


__all__ = [
    "CHAMPION",
    "TAG_HORIZON",
    "TAG_THRESHOLD",
    "ServingModel",
    "champion_version",
    "load_champion",
    "load_version",
]
