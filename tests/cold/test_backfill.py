"""Silver rebuilt from bronze for a date range: idempotent, equal to the incremental silver, repairs damage."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from cold_data import cold_resources, decode, telemetry, write_bronze
from deltalake import DeltaTable

from plantstream.assets.cold.backfill import rebuild_silver
from plantstream.assets.cold.checksums import content_checksum
from plantstream.assets.cold.jobs import BACKFILL_JOB, COLD_JOBS
from plantstream.assets.silver import silver_app_id, update_silver
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.orchestration.definitions import build_definitions
from plantstream.orchestration.resources import Lake

pytestmark = pytest.mark.integration
TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [TODAY - dt.timedelta(days=n) for n in (4, 3, 2, 1)]


def bronze_with_resends(settings) -> None:
    """Four days of telemetry; some events sent twice (same machine and seq, a later offset)."""
    events = telemetry(4, DAYS, 120)
    rows = decode(TELEMETRY_STREAM, events)
    resent = decode(TELEMETRY_STREAM, events[::9], first_offset=1_000_000)
    write_bronze(settings, TELEMETRY_STREAM, pa.concat_tables([rows, resent]), commits=12)


def day_checksums(lake: Lake) -> dict[str, tuple[int, int]]:
    dataset = lake.table("silver", "telemetry").to_pyarrow_dataset()
    out = {}
    for day in DAYS:
        c = content_checksum(dataset.to_table(filter=pads.field("event_date") == day))
        out[day.isoformat()] = (c.rows, c.checksum)
    return out


def files_of(lake: Lake, day: dt.date) -> set[str]:
    return {u for u in lake.table("silver", "telemetry").file_uris() if f"event_date={day.isoformat()}" in u}


def test_a_range_rebuilt_twice_is_identical_and_equal_to_the_incremental_silver(stream_settings) -> None:
    settings = stream_settings()
    bronze_with_resends(settings)
    lake = Lake(settings)
    update_silver(lake, TELEMETRY_STREAM)  # the incremental way
    incremental = day_checksums(lake)
    version = lake.table("silver", "telemetry").version()
    outside = files_of(lake, DAYS[0])

    first = rebuild_silver(lake, TELEMETRY_STREAM, DAYS[1], DAYS[3])
    after_first = day_checksums(lake)
    files_first = files_of(lake, DAYS[2])
    second = rebuild_silver(lake, TELEMETRY_STREAM, DAYS[1], DAYS[3])

    assert day_checksums(lake) == after_first == incremental
    assert [d.checksum for d in first] == [d.checksum for d in second]
    assert files_of(lake, DAYS[2]) != files_first  # really rewritten, not skipped
    assert lake.table("silver", "telemetry").version() == version + 6  # one commit per day and run
    assert files_of(lake, DAYS[0]) == outside  # the day outside the range is untouched
    assert sum(d.bronze_rows for d in first) > sum(d.silver_rows for d in first)  # re-sends dropped
    # The incremental asset carries on: its bronze version is kept, and nothing is new.
    silver = lake.table("silver", "telemetry")
    assert silver.transaction_version(silver_app_id(TELEMETRY_STREAM)) is not None
    assert update_silver(lake, TELEMETRY_STREAM)["rows_inserted"] == 0


def test_the_backfill_job_repairs_a_damaged_day_and_records_it_on_silver(stream_settings) -> None:
    settings = stream_settings()
    bronze_with_resends(settings)
    lake = Lake(settings)
    update_silver(lake, TELEMETRY_STREAM)
    good = day_checksums(lake)
    DeltaTable(lake.table_uri("silver", "telemetry"), storage_options=lake.storage_options).delete(
        f"event_date = '{DAYS[2].isoformat()}' AND seq % 3 = 0"
    )
    assert day_checksums(lake) != good

    job = dg.Definitions(jobs=COLD_JOBS, resources=cold_resources(settings)).resolve_job_def(BACKFILL_JOB)
    config = {"start": DAYS[2].isoformat(), "end": DAYS[2].isoformat(), "streams": ["telemetry"]}
    result = job.execute_in_process(run_config={"ops": {"rebuild_silver_days": {"config": config}}})

    assert result.success
    assert day_checksums(lake) == good
    (materialisation,) = [
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    assert materialisation.asset_key == dg.AssetKey(["silver", "telemetry"])
    (day,) = materialisation.metadata["days"].value
    assert (day["day"], day["silver_rows"]) == (DAYS[2].isoformat(), good[DAYS[2].isoformat()][0])


def test_a_reversed_range_fails_at_once_without_retries(stream_settings) -> None:
    settings = stream_settings()
    job = dg.Definitions(jobs=COLD_JOBS, resources=cold_resources(settings)).resolve_job_def(BACKFILL_JOB)
    config = {"start": DAYS[2].isoformat(), "end": DAYS[0].isoformat()}
    result = job.execute_in_process(
        run_config={"ops": {"rebuild_silver_days": {"config": config}}}, raise_on_error=False
    )
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "before it starts" in str(failure.event_specific_data.error)


def test_silver_and_gold_of_a_range_rebuilt_from_bronze_twice_give_identical_tables(stream_settings) -> None:
    from plantstream.assets.gold.assets import GOLD_ASSETS
    from plantstream.assets.silver import SILVER_ASSETS
    from plantstream.contract.streams import STREAMS
    from plantstream.simulator.history import history_plant, write_history, write_plant_file

    plant = history_plant(4)
    settings = stream_settings()
    settings = settings.model_copy(
        update={"plant_file": str(write_plant_file(plant, settings.state_dir / "plant.yaml"))}
    )
    lake = Lake(settings)
    first, last = DAYS[1], DAYS[2]
    start_ms = int(dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp() * 1000)
    write_history(settings, start_ms=start_ms, hours=48, plant=plant, sample_period_s=300)
    definitions = build_definitions(settings)  # the code location, with its resources and checks
    assets = list(definitions.assets or [])
    instance = dg.DagsterInstance.ephemeral()

    def run(selection: dg.AssetSelection, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            assets, selection=selection, resources=definitions.resources, instance=instance, tags=tags
        )
        assert result.success
        return result

    run(dg.AssetSelection.assets(*(a.key for a in SILVER_ASSETS)))  # silver as the lakehouse made it
    gold_keys = [key for asset in GOLD_ASSETS for key in asset.keys]
    days = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }

    def backfill() -> dict[str, tuple[int, int]]:
        """Silver's days rebuilt from bronze, then gold's in one run over the range (its single-run policy)."""
        for spec in STREAMS:
            rebuild_silver(lake, spec, first, last)
        result = run(dg.AssetSelection.groups("gold"), days)  # what gold_refresh runs for gold
        gold_steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"} & {
            a.node_def.name for a in GOLD_ASSETS
        }
        assert len(gold_steps) == len(GOLD_ASSETS)  # one step per gold asset for the whole range
        tables = {f"silver/{s.name}": lake.table("silver", s.name) for s in STREAMS}
        tables |= {key.to_user_string(): lake.table(*key.path) for key in gold_keys}
        return {
            name: (c.rows, c.checksum) for name, t in tables.items() for c in [content_checksum(t.to_pyarrow_dataset())]
        }

    once, twice = backfill(), backfill()
    assert once == twice
    assert all(rows > 0 for rows, _ in once.values()), once
