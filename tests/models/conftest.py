"""A simulated plant's history in a private lake, with features, labels and a champion, for the lifecycle tests.

Real services throughout: the session's SeaweedFS (Delta on S3), Tansu (announcements) and
MLflow server.  One lake per module (3 days of 12 machines at a 30 s step through the
historian-import path and the real silver assets); each test that needs a registry of its
own gets a private registered model, experiment and topic prefix (:func:`registry_settings`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from lakehouse_data import build_lake

from plantstream.assets.predictive_maintenance.pipeline import PipelineResult, build_features, train_on_lake
from plantstream.settings import Settings

DAYS = 3
MACHINES = 12
#: Small and quick: the default tier trains several models.
QUICK_MODEL = {"max_iter": 100, "importance_repeats": 1}


@dataclass(frozen=True)
class ModelLake:
    settings: Settings  # the lake; registry names of the module's champion
    first_day: dt.date
    last_day: dt.date
    ground_truth: Path
    champion: PipelineResult  # the first training of the module's registry (promoted)


def private_registry(settings: Settings, name: str, **models: object) -> Settings:
    return settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"topic_prefix": f"{name}."}),
            "models": settings.models.model_copy(update={"registered_model": name, "experiment": name, **models}),
        }
    )


@pytest.fixture(scope="module")
def model_lake(mlflow_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> ModelLake:
    folder = tmp_path_factory.mktemp("failure-model")
    name = f"pm-{uuid.uuid4().hex[:10]}"
    truth = folder / "truth"
    base = private_registry(
        mlflow_settings.model_copy(
            update={
                "state_dir": folder / "state",
                "lake": mlflow_settings.lake.model_copy(update={"prefix": f"test/{name}"}),
            }
        ),
        name,
        ground_truth_dir=str(truth),
    )
    lake = build_lake(base, truth, machines=MACHINES, days=DAYS, sample_period_s=30.0, gold=False)
    first, last = lake.days[0], lake.days[-1]
    build_features(lake.settings, first, last)
    champion = train_on_lake(lake.settings, refresh_silver=False, rebuild_features=False, model_config=QUICK_MODEL)
    assert champion.promoted, champion.model["gate_reason"]
    return ModelLake(lake.settings, first, last, lake.ground_truth, champion)


@pytest.fixture
def registry_settings(model_lake: ModelLake) -> Callable[..., Settings]:
    """``registry_settings(**models)``: the module's lake with a registry (model, experiment, topics) of its own."""

    def make(**models: object) -> Settings:
        return private_registry(model_lake.settings, f"pm-{uuid.uuid4().hex[:10]}", **models)

    return make
