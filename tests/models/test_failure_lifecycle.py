"""The failure model's lifecycle on a real lake, registry and broker: no mocks.

Ground truth in the lake, reproducibility on pinned Delta versions, the gate refusing a
shuffled-label candidate, promotion and rollback announced on Kafka, batch scores equal to
the stream's path (OnlineFeatures + the champion), the drift sensor, and the
``plantstream train --json`` interface.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import QUICK_MODEL, ModelLake
from typer.testing import CliRunner

from plantstream.assets.gold.tables import write_gold_day
from plantstream.assets.predictive_maintenance import ground_truth as gt
from plantstream.assets.predictive_maintenance.features import FEATURES_SCHEMA, FEATURES_TABLE
from plantstream.assets.predictive_maintenance.pipeline import score_on_lake, train_on_lake
from plantstream.assets.predictive_maintenance.scores import SCORES_SCHEMA, SCORES_TABLE
from plantstream.assets.predictive_maintenance.tables import read_feature_day, read_label_day
from plantstream.connect.mlflow import mlflow_client
from plantstream.contract.promotions import PromotionAction
from plantstream.domain.aggregates import window_aggregates
from plantstream.models.features import FEATURE_NAMES, MAX_SIGNAL_HORIZON_MIN, OnlineFeatures, history_kinds
from plantstream.models.registry import TAG_DECISION, TAG_DELTA, TAG_NEGATIVE_CONTROL, read_announcements
from plantstream.models.serving import champion_version, load_champion
from plantstream.orchestration.resources import Lake
from plantstream.settings import child_env
from plantstream.simulator.ground_truth import read_ground_truth

# The module's lake (3 days x 12 machines through silver, features, labels and a first training)
# takes ~2 min on a shared 2-core machine, and every test trains: the slow tier.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

COMPARED = ("pr_auc", "roc_auc", "f1", "precision", "recall", "threshold", "median_lead_time_min", "baseline_f1")


def test_ground_truth_is_in_the_lake_exactly_once(model_lake: ModelLake) -> None:
    lake = Lake(model_lake.settings)
    logged = [e for e in read_ground_truth(model_lake.ground_truth) if e.kind in gt.GROUND_TRUTH_KINDS]
    table = lake.table(gt.TIER, gt.NAME)
    rows = table.to_pyarrow_dataset().to_table()
    assert rows.num_rows == len(logged) > 0
    failures = rows.filter(pc.equal(rows["kind"], "failure"))
    assert failures.num_rows == sum(e.kind == "failure" for e in logged)
    assert set(pc.unique(failures["mode"]).to_pylist()) <= {"TWF", "HDF", "PWF", "OSF", "RNF"}
    version = table.version()
    again = gt.import_ground_truth(lake)
    assert again.rows_added == 0 and again.version == version  # nothing new: no commit


def test_same_delta_versions_and_seed_give_the_same_model(model_lake: ModelLake) -> None:
    first = model_lake.champion.model
    # New Delta versions of the features and labels (the last day written again, same content) ...
    from plantstream.assets.predictive_maintenance.pipeline import build_features

    build_features(model_lake.settings, model_lake.last_day, model_lake.last_day)
    versions = first["delta_versions"]
    now = Lake(model_lake.settings).table("gold", FEATURES_TABLE).version()
    assert now > versions["gold/failure_features"]
    # ... and training pinned to the champion's versions, same seed: the same model, which wins nothing.
    again = train_on_lake(
        model_lake.settings,
        first_day=model_lake.first_day,
        last_day=model_lake.last_day,
        refresh_silver=False,
        rebuild_features=False,
        model_config={
            **QUICK_MODEL,
            "features_version": versions["gold/failure_features"],
            "labels_version": versions["gold/failure_labels"],
        },
    )
    assert {k: again.model[k] for k in COMPARED} == {k: first[k] for k in COMPARED}
    assert again.model["delta_versions"] == versions
    assert not again.promoted and "by the margin" in again.model["gate_reason"]
    client = mlflow_client(model_lake.settings)
    tags = client.get_model_version(model_lake.settings.models.registered_model, again.model["model_version"]).tags
    assert tags[f"{TAG_DELTA}gold/failure_features"] == str(versions["gold/failure_features"])
    assert tags[TAG_DECISION] == "refused"
    assert champion_version(model_lake.settings) == first["model_version"]


def test_gate_refuses_a_shuffled_label_candidate_and_keeps_the_champion(model_lake: ModelLake) -> None:
    settings = model_lake.settings
    champion = champion_version(settings)
    before = read_announcements(settings)
    # Through the real asset, so the refusal is seen the way Dagster reports it.
    from plantstream.assets.predictive_maintenance.assets import GATE_CHECK, MODEL_KEY
    from plantstream.orchestration.definitions import build_definitions

    defs = build_definitions(settings)
    result = dg.materialize(
        list(defs.assets or []),
        selection=dg.AssetSelection.assets(MODEL_KEY),
        resources=defs.resources,
        run_config={"ops": {"models__failure_model": {"config": {**QUICK_MODEL, "negative_control_seed": 11}}}},
        raise_on_error=False,
    )
    assert not result.success  # the blocking check fails the run: loud
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == GATE_CHECK]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    metadata = result.asset_materializations_for_node("models__failure_model")[-1].metadata
    assert metadata["promoted"].value is False and metadata["negative_control"].value is True
    assert metadata["gate_checks"].value["better_than_chance"] is False
    assert "refused" in metadata["gate_reason"].value
    refused = metadata["model_version"].value
    assert refused != champion and champion_version(settings) == champion
    tags = mlflow_client(settings).get_model_version(settings.models.registered_model, refused).tags
    assert tags[TAG_DECISION] == "refused" and tags[TAG_NEGATIVE_CONTROL] == "true"
    assert read_announcements(settings) == before  # a refusal announces nothing


def test_promotion_and_rollback_move_the_alias_and_are_announced(registry_settings) -> None:
    # Margin 0: a candidate at least as good as the champion replaces it, so training the same model
    # twice (same data and seed: identical) promotes both, one after the other.
    settings = registry_settings(gate_margin=0.0)
    first = train_on_lake(settings, refresh_silver=False, rebuild_features=False, model_config=QUICK_MODEL)
    second = train_on_lake(settings, refresh_silver=False, rebuild_features=False, model_config=QUICK_MODEL)
    assert first.promoted and second.promoted, (first.model["gate_reason"], second.model["gate_reason"])
    v1, v2 = first.model["model_version"], second.model["model_version"]
    assert second.model["previous_champion_version"] == v1 and champion_version(settings) == v2
    runner = CliRunner()
    from plantstream.cli.main import app

    rolled = runner.invoke(app, ["model", "rollback", "--reason", "test", "--json"], env=child_env(settings))
    assert rolled.exit_code == 0, rolled.output
    assert json.loads(rolled.stdout.strip().splitlines()[-1])["version"] == v1
    assert champion_version(settings) == v1 and load_champion(settings).version == v1
    again = runner.invoke(app, ["model", "rollback"], env=child_env(settings))
    assert again.exit_code == 1 and "first champion" in again.output  # nowhere further back
    announced = read_announcements(settings)
    assert [(a.action, a.version, a.previous_version, a.seq) for a in announced] == [
        (PromotionAction.PROMOTE, v1, None, 1),
        (PromotionAction.PROMOTE, v2, v1, 2),
        (PromotionAction.ROLLBACK, v1, v2, 3),
    ]
    assert announced[1].model_uri == f"models:/{settings.models.registered_model}/{v2}"
    assert announced[1].threshold == pytest.approx(second.model["threshold"])
    assert announced[1].metrics["pr_auc"] == pytest.approx(second.model["pr_auc"])


def _online_scores(lake: Lake, model, day: dt.date, machine: str, times: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """What the stream computes: closed 60 s windows and machine events into OnlineFeatures, in time order."""
    from plantstream.assets.gold.inputs import silver_rows

    first = day - dt.timedelta(days=1)
    where = pc.field("machine_id") == machine
    telemetry = silver_rows(
        lake, "telemetry", first, day, ["machine_id", "signal", "seq", "event_time", "value"], where=where
    )
    windows = window_aggregates(telemetry.rename_columns(["machine_id", "signal", "seq", "event_ts", "value"]), 60)
    windows = windows.to_pandas().sort_values("window_end", kind="stable")
    window_end = windows["window_end"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    events = silver_rows(lake, "events", first, day, ["event_time", "seq", "event_type", "reason"], where=where)
    events = events.to_pandas().sort_values(["event_time", "seq"], kind="stable")
    event_ms = events["event_time"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()
    state = OnlineFeatures(machine)
    done_w = done_e = 0
    scores, vectors = [], []
    for t in times:
        upto_w = int(np.searchsorted(window_end, t, side="right"))
        state.add(windows.iloc[done_w:upto_w])
        done_w = upto_w
        upto_e = int(np.searchsorted(event_ms, t, side="right"))
        for _, row in events.iloc[done_e:upto_e].iterrows():
            for kind in history_kinds(row["event_type"], row["reason"] if isinstance(row["reason"], str) else None):
                state.add_history(kind, int(row["event_time"].value // 1_000_000))
        done_e = upto_e
        vector = state.features(int(t))
        vectors.append(vector)
        scores.append(model.score(vector))
    return np.array(scores), vectors


def test_batch_scores_equal_online_features_and_the_champion(model_lake: ModelLake) -> None:
    settings = model_lake.settings
    day = model_lake.first_day + dt.timedelta(days=1)
    report = score_on_lake(settings, day)
    model = load_champion(settings)
    assert report["model_version"] == model.version
    lake = Lake(settings)
    table = lake.table("gold", SCORES_TABLE).to_pyarrow_dataset().to_table()
    scores = table.filter(pc.equal(table["day"], pa.scalar(day, pa.date32()))).to_pandas()
    assert set(scores["model_version"]) == {model.version} and len(scores) == report["dagster/row_count"]
    features = read_feature_day(lake, day)
    for machine in ("cnc-mill-001", "press-002", "robot-cell-003", "conveyor-004"):
        mine = scores.loc[scores["machine_id"] == machine].sort_values("ts")
        times = mine["ts"].astype("datetime64[ms, UTC]").astype("int64").to_numpy()[::7]  # every 7th sample
        online, vectors = _online_scores(lake, model, day, machine, times)
        batch = mine.set_index(mine["ts"].astype("datetime64[ms, UTC]").astype("int64"))["probability"]
        np.testing.assert_allclose(online, batch.loc[times].to_numpy(), rtol=0, atol=1e-12)
        offline = features.loc[features["machine_id"] == machine].set_index("ts").loc[times, list(FEATURE_NAMES)]
        np.testing.assert_allclose(pd.DataFrame(vectors).to_numpy(), offline.to_numpy(), rtol=1e-9, atol=1e-9)
        alerts = mine.set_index(batch.index)["alert"].loc[times].to_numpy()
        assert (alerts == (online >= model.threshold)).all()
    assert MAX_SIGNAL_HORIZON_MIN == 60  # the online state fed above starts a day before: every window is there


def _sensor(settings):
    from plantstream.orchestration.definitions import build_definitions
    from plantstream.orchestration.retraining import failure_model_drift

    defs = build_definitions(settings)
    context = dg.build_sensor_context(resources=defs.resources, instance=dg.DagsterInstance.ephemeral())
    return failure_model_drift(context)


def test_drift_sensor_retrains_on_shifted_features_and_degraded_precision(model_lake: ModelLake) -> None:
    settings = model_lake.settings
    lake = Lake(settings)
    champion = champion_version(settings)
    quiet = _sensor(settings)
    assert not quiet.run_requests, quiet.skip_reason
    assert f"v{champion} fit on {model_lake.last_day}" in quiet.skip_reason.skip_message
    # A day whose vibration and temperatures moved: the same rows, the signals scaled.
    drift_day = model_lake.last_day + dt.timedelta(days=2)
    rows = read_feature_day(lake, model_lake.last_day)
    moved = [c for c in FEATURE_NAMES if c.startswith(("vibration_", "air_temp_", "process_temp_", "power_"))]
    rows[moved] = rows[moved] * 1.6 + 3.0
    rows["ts"] = rows["ts"] + 2 * 86_400_000
    shifted = pa.Table.from_pandas(rows.assign(day=drift_day), preserve_index=False)
    shifted = shifted.set_column(1, "ts", pa.array(rows["ts"].to_numpy()).cast(FEATURES_SCHEMA.field("ts").type))
    write_gold_day(lake, FEATURES_TABLE, drift_day, shifted.select(FEATURES_SCHEMA.names).cast(FEATURES_SCHEMA))
    try:
        drifted = _sensor(settings)
        [request] = drifted.run_requests
        assert request.run_key == f"drift:{champion}:{drift_day}"
        assert request.tags["dagster/asset_partition_range_end"] == drift_day.isoformat()
        assert "features drifted" in request.tags["plantstream/retrain_reason"]
    finally:
        write_gold_day(lake, FEATURES_TABLE, drift_day, FEATURES_SCHEMA.empty_table())
    # The champion's alerts of the newest labelled day turn out wrong: every alert on a sample that did not
    # fail.  (The sensor judges the newest day the champion scored; an older day's scores do not count.)
    day = model_lake.last_day
    labels = read_label_day(lake, day)
    negatives = labels.loc[labels["label"] == 0]
    n = len(negatives)
    wrong = pa.Table.from_pydict(
        {
            "day": pa.array([day] * n, pa.date32()),
            "machine_id": pa.array(negatives["machine_id"].to_numpy(), pa.string()),
            "ts": pa.array(negatives["ts"].to_numpy(dtype=np.int64)).cast(SCORES_SCHEMA.field("ts").type),
            "probability": pa.array(np.ones(n)),
            "alert": pa.array(np.ones(n, dtype=bool)),
            "threshold": pa.array(np.full(n, 0.5)),
            "horizon_min": pa.array(np.full(n, 10, dtype=np.int32)),
            "model_name": pa.array([settings.models.registered_model] * n, pa.string()),
            "model_version": pa.array([champion] * n, pa.string()),
            "warm": pa.array(np.ones(n, dtype=bool)),
        },
        schema=SCORES_SCHEMA,
    )
    write_gold_day(lake, SCORES_TABLE, day, wrong)
    try:
        degraded = _sensor(settings)
        [request] = degraded.run_requests
        assert "precision" in request.tags["plantstream/retrain_reason"]
    finally:
        write_gold_day(lake, SCORES_TABLE, day, SCORES_SCHEMA.empty_table())


def test_train_cli_ends_with_one_json_line(registry_settings) -> None:
    settings = registry_settings()
    argv = [str(Path(sys.executable).parent / "plantstream"), "train", "--json"]
    quick = ["--max-iter", "100", "--importance-repeats", "1"]
    done = subprocess.run(
        [*argv, *quick], check=False, env=child_env(settings), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    line = json.loads(lines[-1])
    assert {"pr_auc", "f1", "baseline_f1", "median_lead_time_min", "promoted", "model_version"} <= set(line)
    assert line["promoted"] is True and line["model_version"] == champion_version(settings) == "1"
    assert line["f1"] > line["baseline_f1"] and 0.5 < line["pr_auc"] <= 1 and not math.isnan(line["pr_auc"])
    assert "features and labels" in done.stderr and "PROMOTED" in done.stderr  # progress on stderr
    assert [a.version for a in read_announcements(settings)] == ["1"]
