"""Schedules, sensors and retries of the cold tier, evaluated the way the daemon evaluates them."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest
from cold_data import cold_resources, decode, telemetry, write_bronze

from plantstream.assets.cold.jobs import BACKFILL_JOB, COLD_JOBS
from plantstream.assets.cold.maintenance import maintain_table
from plantstream.assets.gold.calendar import GOLD_PARTITIONS
from plantstream.connect.s3 import delta_storage_options
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.orchestration.automation import automation_defs, gold_refresh_job
from plantstream.orchestration.jobs import lakehouse_refresh
from plantstream.orchestration.resources import Lake
from plantstream.orchestration.retries import is_transient, retry_if_transient
from plantstream.orchestration.schedules import gold_close_schedule, lake_maintenance_daily
from plantstream.orchestration.sensors import (
    GOLD_END_TAG,
    GOLD_START_TAG,
    RANGE_END,
    RANGE_START,
    bronze_versions_sensor,
    closed_gold_days,
    gold_after_silver_sensor,
)
from plantstream.streaming.bronze_sink import bronze_uri

TODAY = dt.datetime.now(dt.UTC).date()
GOLD_JOB = gold_refresh_job(GOLD_PARTITIONS)


def tick(sensor: dg.SensorDefinition, settings, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(cursor=cursor, resources={"lake": Lake(settings)})
    return sensor(context)


def day(n: int) -> str:
    return (TODAY - dt.timedelta(days=n)).isoformat()


@pytest.mark.integration
def test_the_bronze_sensor_requests_each_new_version_once_and_names_the_closed_gold_days(stream_settings) -> None:
    settings = stream_settings()
    sensor = bronze_versions_sensor(lakehouse_refresh, GOLD_PARTITIONS)
    empty = tick(sensor, settings, None)
    assert not empty.run_requests and empty.skip_reason is not None  # no bronze table yet

    days = [TODAY - dt.timedelta(days=3), TODAY - dt.timedelta(days=2), TODAY]
    write_bronze(settings, TELEMETRY_STREAM, decode(TELEMETRY_STREAM, telemetry(3, days, 20)), commits=4)
    first = tick(sensor, settings, empty.cursor)
    (request,) = first.run_requests
    version = json.loads(first.cursor)["telemetry"]
    assert request.run_key == f"bronze:telemetry={version}"
    # Late data on days -3 and -2: gold days -4 .. -1 read them; today's data is left to the daily close.
    assert (request.tags[GOLD_START_TAG], request.tags[GOLD_END_TAG]) == (day(4), day(1))
    # A tick evaluated again from the same cursor (a daemon restart) asks for the same run key:
    assert tick(sensor, settings, empty.cursor).run_requests[0].run_key == request.run_key

    nothing = tick(sensor, settings, first.cursor)
    assert not nothing.run_requests and nothing.cursor == first.cursor

    uri, storage = bronze_uri(settings, TELEMETRY_STREAM), delta_storage_options(settings)
    maintain_table(uri, storage, name="bronze/telemetry", today=TODAY)  # new versions, no new data
    compacted = tick(sensor, settings, first.cursor)
    assert not compacted.run_requests and "without new data" in compacted.skip_reason.skip_message
    assert json.loads(compacted.cursor)["telemetry"] > version

    late = decode(TELEMETRY_STREAM, telemetry(3, [days[0]], 1), first_offset=5_000)
    write_bronze(settings, TELEMETRY_STREAM, late, commits=1)  # a late event in an old day
    again = tick(sensor, settings, compacted.cursor)
    (late_request,) = again.run_requests
    assert (late_request.tags[GOLD_START_TAG], late_request.tags[GOLD_END_TAG]) == (day(4), day(2))
    assert late_request.run_key != request.run_key


@pytest.mark.integration
def test_only_todays_data_or_no_gold_names_no_gold_days(stream_settings) -> None:
    settings = stream_settings()
    write_bronze(settings, TELEMETRY_STREAM, decode(TELEMETRY_STREAM, telemetry(2, [TODAY], 5)), commits=1)
    for sensor in (
        bronze_versions_sensor(lakehouse_refresh, GOLD_PARTITIONS),
        bronze_versions_sensor(lakehouse_refresh),
    ):
        (request,) = tick(sensor, settings, None).run_requests
        assert GOLD_START_TAG not in request.tags


def test_closed_gold_days_are_the_days_with_data_and_their_neighbours_before_today() -> None:
    assert closed_gold_days({day(5), day(1)}, GOLD_PARTITIONS, TODAY) == [day(6), day(5), day(4), day(2), day(1)]
    assert closed_gold_days({day(0)}, GOLD_PARTITIONS, TODAY) == []
    new_year = dt.date(2025, 1, 10)  # gold's partitions start 2025-01-01
    assert closed_gold_days({"2024-12-31"}, GOLD_PARTITIONS, new_year) == ["2025-01-01"]
    assert closed_gold_days({day(40), day(3)}, GOLD_PARTITIONS, TODAY) == [day(4), day(3), day(2)]  # 40: a backfill


@pytest.mark.integration
def test_gold_follows_a_successful_silver_run_that_names_days_once(stream_settings) -> None:
    settings = stream_settings()
    write_bronze(settings, TELEMETRY_STREAM, decode(TELEMETRY_STREAM, telemetry(2, [TODAY], 5)), commits=1)
    instance = dg.DagsterInstance.ephemeral()
    definitions = dg.Definitions(jobs=COLD_JOBS, resources=cold_resources(settings))
    sensor = gold_after_silver_sensor(lakehouse_refresh, GOLD_JOB)

    def evaluate(run_id: str):
        run = instance.get_run_by_id(run_id)
        (success,) = [e.dagster_event for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)]
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_event=success, dagster_instance=instance, dagster_run=run
        )
        return sensor(context)

    config = {"start": "2025-03-01", "end": "2025-03-07", "streams": ["telemetry"]}
    backfill = definitions.resolve_job_def(BACKFILL_JOB).execute_in_process(
        run_config={"ops": {"rebuild_silver_days": {"config": config}}}, instance=instance
    )
    request = evaluate(backfill.run_id)
    assert isinstance(request, dg.RunRequest)
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2025-03-01", "2025-03-07")
    assert request.run_key == f"gold-after-{backfill.run_id}"

    tagged = definitions.resolve_job_def(BACKFILL_JOB).execute_in_process(
        run_config={"ops": {"rebuild_silver_days": {"config": config}}},
        instance=instance,
        tags={GOLD_START_TAG: "2025-02-01", GOLD_END_TAG: "2025-02-02"},
    )
    request = evaluate(tagged.run_id)
    assert (request.tags[RANGE_START], request.tags[RANGE_END]) == ("2025-02-01", "2025-02-02")  # tags win


def test_gold_closes_yesterday_at_06_30_utc_after_silver_and_maintenance_follows() -> None:
    schedule = gold_close_schedule(lakehouse_refresh)
    assert schedule.cron_schedule == "30 6 * * *" and schedule.execution_timezone == "UTC"
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 3, 10, 6, 30, tzinfo=dt.UTC))
    request = schedule(context)
    assert isinstance(request, dg.RunRequest)
    assert (request.tags[GOLD_START_TAG], request.tags[GOLD_END_TAG]) == ("2026-03-09", "2026-03-09")
    assert request.run_key == "gold-close-2026-03-09"
    assert lake_maintenance_daily.cron_schedule == "30 7 * * *"


def test_every_schedule_and_sensor_of_the_cold_tier_is_on_by_default() -> None:
    repository = automation_defs(GOLD_PARTITIONS).get_repository_def()
    assert {s.name for s in repository.schedule_defs} == {"gold_daily_close", "lake_maintenance_daily"}
    assert {s.name for s in repository.sensor_defs} == {"bronze_versions", "gold_after_silver"}
    for schedule in repository.schedule_defs:
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING, schedule.name
    for sensor in repository.sensor_defs:
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING, sensor.name


@pytest.mark.integration
def test_real_s3_and_hot_store_outages_count_as_transient(free_port, platform_settings) -> None:
    from clickhouse_connect.driver.exceptions import DatabaseError
    from deltalake import DeltaTable

    from plantstream.connect.hotstore import hotstore_client

    dead = free_port()
    storage = delta_storage_options(platform_settings) | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead}"}
    with pytest.raises(Exception) as s3_down:
        DeltaTable("s3://plantstream-lake/nowhere", storage_options=storage)
    assert is_transient(s3_down.value)
    gone = platform_settings.model_copy(
        update={"hotstore": platform_settings.hotstore.model_copy(update={"port": dead})}
    )
    with pytest.raises(Exception) as hot_down:
        hotstore_client(gone)
    assert is_transient(hot_down.value)
    client = hotstore_client(platform_settings)
    try:
        with pytest.raises(DatabaseError) as bad_sql:
            client.command("SELECT no_such_function()")
    finally:
        client.close()
    assert not is_transient(bad_sql.value)  # the server's answer to a bad statement: retrying cannot help


def test_transient_errors_are_retried_and_others_fail_the_step_at_once() -> None:
    attempts: dict[str, int] = {"flaky": 0, "broken": 0}

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=3))
    def flaky() -> None:
        with retry_if_transient("flaky"):
            attempts["flaky"] += 1
            if attempts["flaky"] < 3:
                raise ConnectionResetError("the S3 endpoint went away")

    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=3))
    def broken() -> None:
        with retry_if_transient("broken"):
            attempts["broken"] += 1
            raise ValueError("checksums differ")

    assert dg.materialize([flaky]).success
    assert attempts["flaky"] == 3
    result = dg.materialize([broken], raise_on_error=False)
    assert not result.success
    assert attempts["broken"] == 1
    assert not is_transient(FileNotFoundError("no such table"))
    from botocore.exceptions import ClientError

    assert is_transient(ClientError({"Error": {"Code": "SlowDown"}}, "ListObjectsV2"))
    assert not is_transient(ClientError({"Error": {"Code": "NoSuchBucket"}}, "ListObjectsV2"))
    cause = ValueError("wrapped")
    cause.__cause__ = TimeoutError("read timed out")
    assert is_transient(cause)


@pytest.mark.integration
def test_a_long_gap_or_a_replaced_table_still_names_the_right_days(stream_settings) -> None:
    from plantstream.assets.cold.delta_log import partitions_changed

    settings = stream_settings()
    lake = Lake(settings)
    days = [TODAY - dt.timedelta(days=n) for n in (5, 4, 3)]
    for n, day_ in enumerate(days):
        write_bronze(
            settings,
            TELEMETRY_STREAM,
            decode(TELEMETRY_STREAM, telemetry(2, [day_], 4), first_offset=n * 100),
            commits=3,
        )
    table = lake.table("bronze", "telemetry")
    by_commits = partitions_changed(table, 2, "event_date")  # the last two days' six commits, read one by one
    by_snapshots = partitions_changed(table, 2, "event_date", storage_options=lake.storage_options, max_commits=1)
    assert by_commits == by_snapshots == {d.isoformat() for d in days[1:]}
    assert partitions_changed(table, -1, "event_date") == {d.isoformat() for d in days}  # nothing seen yet

    sensor = bronze_versions_sensor(lakehouse_refresh, GOLD_PARTITIONS)
    ahead = json.dumps({"telemetry": table.version() + 50})  # a cursor from a lake that was wiped and refilled
    (request,) = tick(sensor, settings, ahead).run_requests
    assert (request.tags[GOLD_START_TAG], request.tags[GOLD_END_TAG]) == (day(6), day(2))
