"""The main job end to end on the real local platform: plant -> Kafka -> Bytewax ->
hot store + bronze Delta on S3 -> Dagster silver, with a failure model the stream scores with.

From the live plant (OPC UA, MQTT, Modbus -> edge gateway; the demo's default: history
simulated once, a model trained and promoted, the stream scoring with it; run twice) and
from the direct load generator without the model (run twice: counts add up, windows equal
a recomputation).

The live test takes a few minutes: on its first run the live plant runs until the stream
can decide its first sample (``demo_model.seconds_to_first_sample``: about 2 to 4 minutes,
whatever ``live_seconds`` says); the second run is short (``extend_live=False``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pyarrow.compute as pc
import pytest

from plantstream.cli.demo_job import run_demo
from plantstream.cli.demo_model import HISTORY_DAYS, has_history, read_stream_scores
from plantstream.domain.aggregates import AGGREGATE_INPUT_COLUMNS, window_aggregates
from plantstream.models.serving import champion_version
from plantstream.orchestration.resources import HotStore, Lake
from plantstream.settings import Settings

pytestmark = pytest.mark.integration


def small_plant(settings: Settings, machines: int, minutes: float) -> Settings:
    simulator = settings.simulator.model_copy(update={"machines": machines, "simulated_minutes": minutes})
    return settings.model_copy(update={"simulator": simulator})


def test_live_plant_through_the_gateway_lands_every_event_once_with_no_gaps(
    mlflow_settings: Settings, stream_settings, tmp_path: Path
) -> None:
    # Private topics, hot-store database and lake prefix; the platform's own state dir
    # (the demo checks the platform there, MLflow included), so the gateway buffer is the
    # platform's.  A private registered model and experiment, and a private ground-truth
    # directory (the history's log stays out of the other tests' lakes).
    settings = stream_settings().model_copy(update={"state_dir": mlflow_settings.state_dir})
    name = f"demo-{uuid.uuid4().hex[:10]}"
    models = settings.models.model_copy(
        update={"registered_model": name, "experiment": name, "ground_truth_dir": str(tmp_path / "truth")}
    )
    simulator = settings.simulator.model_copy(update={"live_seconds": 6.0})
    settings = settings.model_copy(update={"simulator": simulator, "models": models})
    assert not has_history(settings) and champion_version(settings) is None
    result = run_demo(settings)
    assert result.source == "edge"
    assert result.counts_agree, result.summary()
    assert result.telemetry.gaps_missing == 0
    assert result.machines == 12  # the shipped plant file
    assert set(result.events_by_protocol) == {"opcua", "mqtt", "modbus"}
    assert all(n > 0 for n in result.events_by_protocol.values()), result.events_by_protocol
    assert sum(result.events_by_protocol.values()) == sum(s.produced for s in result.streams.values())
    assert all(s.dead_letters == 0 for s in result.streams.values()) and result.late_events == 0
    # What the stream concluded and the lakehouse made of it, read back from where a user looks.
    insights, gold = result.insights, result.gold
    assert insights is not None and gold is not None
    assert insights.twin_machines == 12, insights  # one twin per machine of the plant file
    assert {row.line for row in insights.oee} == {"line-1", "line-2", "line-3"}, insights.oee
    assert gold.succeeded and gold.rows["oee"] > 0 and gold.rows["telemetry_hourly"] > 0, gold
    assert set(gold.line_oee) == {"line-1", "line-2", "line-3"}, gold.line_oee
    summary = result.summary()
    assert {"alerts_raised", "oee_live", "twin_machines", "gold", "model"} <= set(summary)

    # The model step: history of past days simulated, a model trained on it and promoted as the
    # first champion (the registry says so), and the stream scored with it, only with it.
    model = result.model
    assert model is not None
    step = model.step
    today = dt.datetime.now(dt.UTC).date()
    assert len(step.history_days) == HISTORY_DAYS and max(step.history_days) < today.isoformat(), step
    assert has_history(settings)
    assert step.trained and step.promoted, step.gate_reason
    assert step.champion_version is not None and champion_version(settings) == step.champion_version
    assert step.metrics["pr_auc"] is not None and step.metrics["f1"] > step.metrics["baseline_f1"], step.metrics
    assert model.scores.scores > 0, model.summary()
    assert model.scores.versions == [step.champion_version], model.summary()
    line = summary["model"]
    assert line["model_version"] == step.champion_version and line["promoted"] and line["trained"]
    assert line["scores_emitted"] == model.scores.scores and line["scored_by_versions"] == [step.champion_version]
    assert {"pr_auc", "f1", "baseline_f1", "median_lead_time_min", "maintenance_alerts"} <= set(line)
    # MaintenanceRequired lands like every alert: on factory.alerts and once in the hot table.
    assert line["maintenance_alerts_in_hot_store"] == line["maintenance_alerts"], line
    # Read back independently of the run's window: every score the topic holds is by the champion.
    everything = read_stream_scores(settings, since=dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
    assert everything.versions == [step.champion_version] and everything.scores >= model.scores.scores

    # Every machine of the plant file landed, with the timestamps its protocol gives:
    # OPC UA and MQTT carry the device's time, Modbus has none (the read time is the event time).
    client = HotStore(settings).client()
    try:
        rows = client.query(
            "SELECT machine_id, count(), countIf(source_ts IS NULL), countIf(quality = 'good') "
            "FROM telemetry_raw FINAL GROUP BY machine_id ORDER BY machine_id"
        ).result_rows
    finally:
        client.close()
    assert len(rows) == 12
    for machine_id, count, without_source_ts, good in rows:
        legacy = machine_id.startswith(("press-", "conveyor-"))  # the plant file's Modbus machines
        assert without_source_ts == (count if legacy else 0), machine_id
        assert good == count, machine_id

    # A second run (short: the live plant is not extended) continues the gateway's numbering and
    # adds to what the first left: no history simulated again (bronze grows by exactly what was
    # produced), no retraining, and whatever the stream scores, it scores with the same champion.
    second = run_demo(settings, extend_live=False)
    assert second.counts_agree, second.summary()
    assert second.late_events == 0
    assert second.model is not None
    assert second.model.step.history_days == [] and not second.model.step.trained, second.model.summary()
    assert second.model.step.champion_version == step.champion_version == champion_version(settings)
    assert second.model.step.metrics["pr_auc"] == pytest.approx(step.metrics["pr_auc"], abs=1e-4)
    assert set(second.model.scores.versions) <= {step.champion_version}
    for name, s in second.streams.items():
        assert second.totals[name].hot_rows == result.totals[name].hot_rows + s.produced, name
        assert second.totals[name].bronze_rows == result.totals[name].bronze_rows + s.produced, name
        assert second.totals[name].silver_rows == result.totals[name].silver_rows + s.produced, name


def test_counts_agree_across_kafka_hot_store_bronze_and_silver_and_runs_add_up(
    platform_settings: Settings,
) -> None:
    settings = small_plant(platform_settings, machines=6, minutes=6)
    first = run_demo(settings, source="direct", with_model=False)
    expected_events = 6 * 60 * 6  # samples per machine
    telemetry = first.telemetry
    assert telemetry.produced > expected_events  # several signals per machine
    assert telemetry.produced == telemetry.kafka == telemetry.hot_rows == telemetry.bronze_rows
    assert telemetry.silver_rows == telemetry.produced
    assert telemetry.dead_letters == 0
    assert first.counts_agree, first.summary()
    assert first.hot_windows > 0
    assert not first.platform_started_by_demo  # the session's platform was already up

    second = run_demo(settings, source="direct", with_model=False)
    assert second.counts_agree, second.summary()
    # The plant's clock continues, so the second run is on time for its windows, not late,
    # and every window the stream wrote equals a batch recomputation from bronze.
    assert second.late_events == 0
    assert_windows_equal_batch_recomputation(settings)
    for name, s in second.streams.items():
        assert second.totals[name].hot_rows == first.totals[name].hot_rows + s.produced, name
        assert second.totals[name].bronze_rows == first.totals[name].bronze_rows + s.produced, name
        assert second.totals[name].silver_rows == first.totals[name].silver_rows + s.produced, name


def assert_windows_equal_batch_recomputation(settings: Settings) -> None:
    bronze = Lake(settings).table("bronze", "telemetry")
    assert bronze is not None
    events = bronze.to_pyarrow_dataset().to_table(columns=list(AGGREGATE_INPUT_COLUMNS))
    client = HotStore(settings).client()
    try:
        for window_seconds in (settings.stream.window_seconds, settings.stream.second_window_seconds):
            expected = window_aggregates(events, window_seconds)
            stored = client.query(
                "SELECT count(), sum(count) FROM telemetry_windows FINAL WHERE window_seconds = {w:UInt32}",
                parameters={"w": window_seconds},
            ).first_row
            assert tuple(stored) == (expected.num_rows, pc.sum(expected["count"]).as_py()), window_seconds
    finally:
        client.close()
