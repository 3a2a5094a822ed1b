"""Verified hot -> cold archival: old days are dropped only when the lake holds them; the rest is kept and reported."""

from __future__ import annotations

import datetime as dt
import logging

import dagster as dg
import pytest
from cold_data import cold_resources, decode, energy, hot_query, telemetry, write_bronze, write_hot
from conftest import RETENTION_DAYS
from deltalake import DeltaTable

from plantstream.assets.cold.archival import STAGING_MARKER, archive_hot_partitions, ttl_warnings
from plantstream.assets.cold.lake_assets import ARCHIVE_CHECK, hot_store_archive
from plantstream.assets.silver import update_silver
from plantstream.connect.hotstore import hotstore_client
from plantstream.contract.streams import ENERGY_STREAM, TELEMETRY_STREAM
from plantstream.orchestration.resources import HotStore, Lake

pytestmark = pytest.mark.integration
TODAY = dt.datetime.now(dt.UTC).date()
OLD = [TODAY - dt.timedelta(days=RETENTION_DAYS + n) for n in (4, 3, 2)]  # older than the retention
RECENT = [TODAY - dt.timedelta(days=1)]
STREAMS = (TELEMETRY_STREAM, ENERGY_STREAM)


def hot_days(settings, table: str) -> dict[str, int]:
    rows = hot_query(
        settings,
        f"SELECT toString(toDate(event_ts)), count() FROM {settings.hotstore.database}.{table} FINAL GROUP BY 1",
    )
    return dict(rows)


def stream_the_days(settings) -> dict[str, int]:
    """Both streams for the old and recent days, written as the stream writes them; silver up to date."""
    events = [(TELEMETRY_STREAM, telemetry(4, OLD + RECENT, 60)), (ENERGY_STREAM, energy(4, OLD + RECENT, 6))]
    lake = Lake(settings)
    for spec, items in events:
        rows = decode(spec, items)
        write_bronze(settings, spec, rows, commits=5)
        write_hot(settings, spec, rows)
        update_silver(lake, spec)
    return {spec.name: len(items) for spec, items in events}


def test_verified_days_are_dropped_and_an_incomplete_lake_day_is_kept_and_reported(cold_settings) -> None:
    settings = cold_settings()
    stream_the_days(settings)
    lake, hot = Lake(settings), HotStore(settings)
    # The lake loses a few readings of one old telemetry day (a failed write, a bad repair).
    incomplete = OLD[1].isoformat()
    DeltaTable(lake.table_uri("silver", "telemetry"), storage_options=lake.storage_options).delete(
        f"event_date = '{incomplete}' AND machine_id = 'cnc-01' AND seq % 7 = 0"
    )
    before = {spec.name: hot_days(settings, spec.hot_table) for spec in STREAMS}

    report = archive_hot_partitions(hot, lake, today=TODAY)

    figures = report.figures()
    assert figures["cutoff"] == (TODAY - dt.timedelta(days=RETENTION_DAYS)).isoformat()
    assert figures["partitions_checked"] == len(OLD) * len(STREAMS)
    assert figures["partitions_kept"] == 1
    assert figures["partitions_dropped"] == len(OLD) * len(STREAMS) - 1
    (kept,) = report.kept
    assert (kept.stream, kept.day) == ("telemetry", incomplete)
    assert kept.hot.rows > kept.lake.rows and "row counts differ" in kept.reason
    assert not kept.dropped
    for verdict in report.dropped:
        assert verdict.hot == verdict.lake and verdict.hot.rows == before[verdict.stream][verdict.day]
    # What is left in the hot store: the kept day (all of it) and the recent days, untouched.
    assert hot_days(settings, "telemetry_raw") == {
        incomplete: before["telemetry"][incomplete],
        RECENT[0].isoformat(): before["telemetry"][RECENT[0].isoformat()],
    }
    assert hot_days(settings, "energy_raw") == {RECENT[0].isoformat(): before["energy"][RECENT[0].isoformat()]}
    tables = [r[0] for r in hot_query(settings, f"SHOW TABLES FROM {settings.hotstore.database}")]
    assert not [t for t in tables if STAGING_MARKER in t]  # nothing left staged
    assert report.ttl_days["telemetry_raw"] == RETENTION_DAYS + 7
    assert ttl_warnings(report, RETENTION_DAYS) == []

    # Repaired lake (silver rebuilt from bronze) -> the kept day goes too, on the next run.
    from plantstream.assets.cold.backfill import rebuild_silver

    rebuild_silver(lake, TELEMETRY_STREAM, OLD[1], OLD[1])
    again = archive_hot_partitions(hot, lake, today=TODAY)
    assert [(v.stream, v.day, v.dropped) for v in again.verdicts] == [("telemetry", incomplete, True)]
    assert list(hot_days(settings, "telemetry_raw")) == [RECENT[0].isoformat()]


def test_the_asset_reports_kept_days_in_metadata_a_warning_and_a_failed_check(cold_settings) -> None:
    settings = cold_settings()
    stream_the_days(settings)
    lake = Lake(settings)
    DeltaTable(lake.table_uri("silver", "energy"), storage_options=lake.storage_options).delete(
        f"event_date = '{OLD[0].isoformat()}'"
    )  # a whole day missing from the lake

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([hot_store_archive], resources=cold_resources(settings), instance=instance)

    (materialisation,) = result.asset_materializations_for_node("maintenance__hot_store_archive")
    metadata = {k: v.value for k, v in materialisation.metadata.items()}
    assert metadata["partitions_kept"] == 1
    assert metadata["partitions_dropped"] == len(OLD) * len(STREAMS) - 1
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == ARCHIVE_CHECK and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["partitions_kept"].value == 1
    logged = [(e.level, e.user_message) for e in instance.all_logs(result.run_id) if not e.is_dagster_event]
    assert (logging.WARNING, f"kept hot partition energy {OLD[0].isoformat()}: row counts differ: hot 24, lake 0") in [
        (level, message.split(" - ")[-1]) for level, message in logged
    ], logged
    kept = [p for p in metadata["partitions"] if not p["dropped"]]
    assert [(p["stream"], p["day"], p["lake_rows"]) for p in kept] == [("energy", OLD[0].isoformat(), 0)]


def test_a_staging_table_left_by_an_interrupted_run_is_moved_back_first(cold_settings) -> None:
    settings = cold_settings()
    counts = stream_the_days(settings)
    db = settings.hotstore.database
    client = hotstore_client(settings)
    try:  # what a run that died after moving a day aside leaves behind
        client.command(f"CREATE TABLE {db}.energy_raw{STAGING_MARKER}dead AS {db}.energy_raw")
        client.command(f"ALTER TABLE {db}.energy_raw{STAGING_MARKER}dead REMOVE TTL")
        pid = RECENT[0].strftime("%Y%m%d")
        client.command(
            f"ALTER TABLE {db}.energy_raw MOVE PARTITION ID '{pid}' TO TABLE {db}.energy_raw{STAGING_MARKER}dead"
        )
    finally:
        client.close()
    assert RECENT[0].isoformat() not in hot_days(settings, "energy_raw")

    report = archive_hot_partitions(HotStore(settings), Lake(settings), today=TODAY, dry_run=True)

    assert report.recovered == [f"energy_raw{STAGING_MARKER}dead"]
    assert sum(hot_days(settings, "energy_raw").values()) == counts["energy"]  # nothing lost, nothing dropped
    assert {v.reason for v in report.verdicts} == {"verified (dry run)"}


def test_a_raw_table_made_without_the_backstop_gets_it_on_the_next_start_with_its_rows(cold_settings) -> None:
    from plantstream.assets.cold.archival import ttl_days
    from plantstream.streaming.hot_tables import ensure_hot_tables

    settings = cold_settings()
    db = settings.hotstore.database
    rows = decode(TELEMETRY_STREAM, telemetry(2, RECENT, 30))
    write_hot(settings, TELEMETRY_STREAM, rows)

    def ttl() -> int | None:
        query = f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = 'telemetry_raw'"
        return ttl_days(str(hot_query(settings, query)[0][0]))

    client = hotstore_client(settings)
    try:  # as an older release made it: the TTL equal to the retention
        client.command(f"ALTER TABLE {db}.telemetry_raw MODIFY TTL toDateTime(event_ts) + INTERVAL 30 DAY")
    finally:
        client.close()
    assert ttl() == RETENTION_DAYS

    ensure_hot_tables(settings)

    assert ttl() == RETENTION_DAYS + 7
    assert hot_days(settings, "telemetry_raw") == {RECENT[0].isoformat(): len(rows)}
