"""Hot-store loss -> re-hydrate from the lake -> the same answers to the same queries.

The original hot tables are written by the real dataflow (Kafka -> Bytewax -> hot store
and bronze), so the comparison does not trust the re-hydration's own reshaping.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow.dataset as pads
import pytest
from cold_data import cold_resources, hot_query, produce, telemetry
from conftest import RETENTION_DAYS, TTL_MARGIN_DAYS

from plantstream.assets.cold.backfill import hot_ttl_days
from plantstream.assets.cold.jobs import COLD_JOBS, REHYDRATE_JOB
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.orchestration.resources import HotStore, Lake
from plantstream.streaming.runner import run_flow

pytestmark = pytest.mark.integration
TODAY = dt.datetime.now(dt.UTC).date()
BEYOND_TTL = TODAY - dt.timedelta(days=RETENTION_DAYS + TTL_MARGIN_DAYS + 3)
DAYS = [TODAY - dt.timedelta(days=n) for n in (3, 2, 1)]


def answers(settings) -> dict[str, list[tuple]]:
    """What an analyst asks the hot store (every query in the deduplicated view)."""
    t = f"{settings.hotstore.database}.telemetry_raw"
    queries = {
        "per_machine_day": f"SELECT machine_id, toDate(event_ts) d, count(), round(sum(value), 6), max(seq), "
        f"min(kafka_offset) FROM {t} FINAL GROUP BY machine_id, d ORDER BY machine_id, d",
        "per_signal": f"SELECT signal, count(), round(avg(value), 9), min(event_ts), max(event_ts), "
        f"any(unit), countIf(quality = 'good') FROM {t} FINAL GROUP BY signal ORDER BY signal",
        "latest_of_a_machine": f"SELECT seq, signal, value, source_ts, read_ts, ingest_ts, v, site, area, line, "
        f"kafka_partition FROM {t} FINAL WHERE machine_id = 'cnc-02' ORDER BY event_ts DESC, seq DESC LIMIT 25",
        "hourly": f"SELECT toStartOfHour(event_ts) h, count(), round(max(value), 6) FROM {t} FINAL "
        "GROUP BY h ORDER BY h",
    }
    return {name: hot_query(settings, sql) for name, sql in queries.items()}


def test_hot_store_loss_rehydrated_from_the_lake_gives_the_same_answers(cold_settings) -> None:
    settings = cold_settings()
    events = telemetry(5, [BEYOND_TTL, *DAYS], 150)
    events += events[::11]  # re-sends: the hot store and the lake must both keep the first copy
    produce(settings, TELEMETRY_STREAM, events)
    stats = run_flow(settings, stop_at_end=True)
    assert stats.events_valid == len(events)
    before = answers(settings)
    assert len(before["per_machine_day"]) == 5 * len(DAYS)  # the day beyond the TTL never stayed hot

    hot_query(settings, f"DROP DATABASE {settings.hotstore.database}")  # the loss
    definitions = dg.Definitions(jobs=COLD_JOBS, resources=cold_resources(settings))
    job = definitions.resolve_job_def(REHYDRATE_JOB)
    config = {"start": BEYOND_TTL.isoformat(), "end": DAYS[-1].isoformat(), "streams": ["telemetry"]}
    result = job.execute_in_process(run_config={"ops": {"rehydrate_days": {"config": config}}})

    assert result.success
    assert answers(settings) == before
    (observation,) = [
        e.event_specific_data.asset_observation for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"
    ]
    days = {d["day"]: d for d in observation.metadata["days"].value}
    assert days[BEYOND_TTL.isoformat()]["skipped"].startswith("older than the table's TTL")
    # Skipped: the days all of whose events are older than the TTL of the re-created table.
    ttl = hot_ttl_days(HotStore(settings), TELEMETRY_STREAM)
    assert ttl is not None
    expected = [d for d in days if dt.date.fromisoformat(d) + dt.timedelta(days=1) <= TODAY - dt.timedelta(days=ttl)]
    assert [d for d, v in days.items() if v["skipped"]] == expected
    assert observation.metadata["days_skipped"].value == len(expected) > 0
    bronze_rows = Lake(settings).table("bronze", "telemetry").to_pyarrow_dataset()
    in_range = bronze_rows.count_rows(filter=pads.field("event_date") >= DAYS[0])
    assert observation.metadata["rows_inserted"].value == in_range

    # Again: the deduplication tokens drop every insert, so not even unmerged copies are added.
    physical = hot_query(settings, f"SELECT count() FROM {settings.hotstore.database}.telemetry_raw")
    assert job.execute_in_process(run_config={"ops": {"rehydrate_days": {"config": config}}}).success
    assert hot_query(settings, f"SELECT count() FROM {settings.hotstore.database}.telemetry_raw") == physical
    assert answers(settings) == before
