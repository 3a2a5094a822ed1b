"""The main job end to end on the real local platform: plant -> Kafka -> Bytewax ->
hot store + bronze Delta on S3 -> Dagster silver.

From the live plant (OPC UA, MQTT, Modbus -> edge gateway; the demo's default) and from
the direct load generator (run twice: counts add up, windows equal a recomputation).
"""

from __future__ import annotations

import pyarrow.compute as pc
import pytest

from plantstream.cli.demo_job import run_demo
from plantstream.domain.aggregates import AGGREGATE_INPUT_COLUMNS, window_aggregates
from plantstream.orchestration.resources import HotStore, Lake
from plantstream.settings import Settings

pytestmark = pytest.mark.integration


def small_plant(settings: Settings, machines: int, minutes: float) -> Settings:
    simulator = settings.simulator.model_copy(update={"machines": machines, "simulated_minutes": minutes})
    return settings.model_copy(update={"simulator": simulator})


def test_live_plant_through_the_gateway_lands_every_event_once_with_no_gaps(
    platform_settings: Settings, stream_settings
) -> None:
    # Private topics, hot-store database and lake prefix; the platform's own state dir
    # (the demo checks the platform there), so the gateway buffer is the platform's.
    settings = stream_settings().model_copy(update={"state_dir": platform_settings.state_dir})
    settings = settings.model_copy(update={"simulator": settings.simulator.model_copy(update={"live_seconds": 6.0})})
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
    assert {"alerts_raised", "oee_live", "twin_machines", "gold"} <= set(summary)

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

    # A second run continues the gateway's numbering and adds to what the first left.
    second = run_demo(settings)
    assert second.counts_agree, second.summary()
    assert second.late_events == 0
    for name, s in second.streams.items():
        assert second.totals[name].hot_rows == result.totals[name].hot_rows + s.produced, name
        assert second.totals[name].bronze_rows == result.totals[name].bronze_rows + s.produced, name
        assert second.totals[name].silver_rows == result.totals[name].silver_rows + s.produced, name


def test_counts_agree_across_kafka_hot_store_bronze_and_silver_and_runs_add_up(
    platform_settings: Settings,
) -> None:
    settings = small_plant(platform_settings, machines=6, minutes=6)
    first = run_demo(settings, source="direct")
    expected_events = 6 * 60 * 6  # samples per machine
    telemetry = first.telemetry
    assert telemetry.produced > expected_events  # several signals per machine
    assert telemetry.produced == telemetry.kafka == telemetry.hot_rows == telemetry.bronze_rows
    assert telemetry.silver_rows == telemetry.produced
    assert telemetry.dead_letters == 0
    assert first.counts_agree, first.summary()
    assert first.hot_windows > 0
    assert not first.platform_started_by_demo  # the session's platform was already up

    second = run_demo(settings, source="direct")
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
