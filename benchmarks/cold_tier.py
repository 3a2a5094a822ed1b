"""``plantstream bench cold``: the cold tier's figures on a platform of its own.

What docs/cold-tier.md quotes, measured on stream-shaped data: bronze committed the way the
stream commits it (one small file per 30-s snapshot, ZSTD 1), then

* maintenance of bronze and silver: files and bytes before and after, seconds, and what a
  "one machine, one hour" read costs before and after;
* verified archival of one hot-store day: seconds per partition (move aside, checksum on
  both sides, drop);
* silver rebuilt from bronze for the day (twice: the content checksums must be equal) and
  the hot store re-hydrated from bronze for it;
* gold for a week of simulated plant history as one single-run backfill over the range.

Full run: 24 machines x 3 signals at 1 Hz for 6 hours of one day (1.56M readings, 720
commits) and a 7-day gold backfill of 24 machines (plant history stepped once a minute);
``--quick``: 6 machines for an hour, and 2 days of 4 machines.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.settings import Settings

FULL = {"machines": 24, "signals": 3, "hours": 6.0, "gold_days": 7, "gold_machines": 24}
QUICK = {"machines": 6, "signals": 3, "hours": 1.0, "gold_days": 2, "gold_machines": 4}
#: The gold week's plant history steps once a minute: gold is about states, parts and energy.
GOLD_SAMPLE_PERIOD_S = 60
#: Dagster's own step logs would drown the figures.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SNAPSHOT_S = 30
SILVER_EVERY_COMMITS = (
    30  # 15 minutes of data  # the stream's default snapshot interval: one bronze commit per interval
)
SIGNALS = {"torque": 40.0, "vibration": 3.0, "air_temperature": 295.0, "rotational_speed": 1500.0}


def _bronze_rows(machines: int, signals: int, start_ms: int, seconds: int) -> pa.Table:
    """Bronze rows of ``machines`` x ``signals`` readings per second, built the way the decoder types them."""
    from plantstream.contract.columns import TIMESTAMP_MS_UTC, bronze_schema
    from plantstream.contract.streams import TELEMETRY_STREAM

    names = list(SIGNALS)[:signals]
    per_second = machines * signals
    n = per_second * seconds
    step = np.repeat(np.arange(seconds, dtype=np.int64), per_second)
    machine = np.tile(np.repeat(np.arange(machines), signals), seconds)
    signal = np.tile(np.arange(signals), machines * seconds)
    ts = start_ms + step * 1000 + machine
    seq = step * signals + signal  # per machine: +1 per reading
    base = np.array([SIGNALS[s] for s in names])[signal]
    schema = bronze_schema(TELEMETRY_STREAM)
    columns = {
        "signal": pa.array(np.array(names)[signal]),
        "value": pa.array(base + (machine * 7 + step * 13) % 50 / 10.0),
        "unit": pa.array(np.full(n, "")),
        "quality": pa.array(np.full(n, "good")),
        "v": pa.array(np.ones(n, dtype=np.int16)),
        "site": pa.array(np.full(n, "plant-1")),
        "area": pa.array(np.full(n, "machining")),
        "line": pa.array(np.char.add("line-", (machine // 4 + 1).astype(str))),
        "machine_id": pa.array(np.char.add("cnc-", np.char.zfill(machine.astype(str), 3))),
        "seq": pa.array(seq),
        "source_ts": pa.array(ts),
        "read_ts": pa.array(ts + 3),
        "ingest_ts": pa.array(ts + 7),
        "kafka_partition": pa.array((machine % 4).astype(np.int32)),
        "kafka_offset": pa.array(np.arange(n, dtype=np.int64) // 4),
        "event_ts": pa.array(ts).cast(TIMESTAMP_MS_UTC),
        "event_date": pa.array((ts // 86_400_000).astype(np.int32)).cast(pa.date32()),
    }
    return pa.table(columns).cast(schema)


def _write_like_the_stream(
    settings: Settings, rows: pa.Table, seconds: int, *, every: int = 0, then: Callable[[], object] | None = None
) -> int:
    """Bronze commits of one snapshot interval each; ``then`` after every ``every`` commits (silver runs)."""
    from deltalake import write_deltalake

    from plantstream.connect.s3 import delta_storage_options
    from plantstream.contract.columns import BRONZE_PARTITION_COLUMNS
    from plantstream.contract.streams import TELEMETRY_STREAM
    from plantstream.streaming.bronze_sink import bronze_uri, bronze_writer_properties

    per_commit = rows.num_rows // (seconds // SNAPSHOT_S)
    commits = 0
    for offset in range(0, rows.num_rows, per_commit):
        write_deltalake(
            bronze_uri(settings, TELEMETRY_STREAM),
            rows.slice(offset, per_commit),
            mode="append",
            partition_by=list(BRONZE_PARTITION_COLUMNS),
            storage_options=delta_storage_options(settings),
            writer_properties=bronze_writer_properties(),
        )
        commits += 1
        if then is not None and commits % every == 0:
            then()
    return commits


def _machine_hour_read(settings: Settings, tier: str, start_ms: int) -> tuple[float, int]:
    """Seconds (best of 3) and rows of one machine's first hour, read the way DuckDB/pyarrow read the lake."""
    from plantstream.orchestration.resources import Lake

    dataset = Lake(settings).table(tier, "telemetry").to_pyarrow_dataset()
    time_column = "event_ts" if tier == "bronze" else "event_time"
    lo = pa.scalar(start_ms, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    hi = pa.scalar(start_ms + 3_600_000, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
    condition = (
        (pads.field("machine_id") == "cnc-001") & (pads.field(time_column) >= lo) & (pads.field(time_column) < hi)
    )
    best, rows = float("inf"), 0
    for _ in range(3):
        started = time.perf_counter()
        rows = dataset.to_table(filter=condition, columns=["machine_id", "seq", "value"]).num_rows
        best = min(best, time.perf_counter() - started)
    return round(best, 3), rows


def _stream_day(settings: Settings, size: dict[str, Any], day: dt.date, console: Console) -> dict[str, Any]:
    from plantstream.assets.cold.archival import archive_hot_partitions
    from plantstream.assets.cold.backfill import rebuild_silver, rehydrate_hot
    from plantstream.assets.cold.maintenance import maintain_table
    from plantstream.assets.silver import update_silver
    from plantstream.connect.hotstore import hotstore_client
    from plantstream.contract.streams import TELEMETRY_STREAM
    from plantstream.orchestration.resources import HotStore, Lake
    from plantstream.streaming.hot_store_sink import raw_rows
    from plantstream.streaming.hot_tables import ensure_hot_tables

    out: dict[str, Any] = {}
    seconds = int(size["hours"] * 3600)
    start_ms = int(dt.datetime(day.year, day.month, day.day, 6, tzinfo=dt.UTC).timestamp() * 1000)
    rows = _bronze_rows(size["machines"], size["signals"], start_ms, seconds)
    out["readings"] = rows.num_rows
    lake = Lake(settings)
    started = time.perf_counter()
    # Silver runs every 15 minutes of data meanwhile (the sensor would run it every minute).
    silver_runs = SILVER_EVERY_COMMITS
    out["bronze_commits"] = _write_like_the_stream(
        settings, rows, seconds, every=silver_runs, then=lambda: update_silver(lake, TELEMETRY_STREAM)
    )
    out["bronze_and_silver_write_s"] = round(time.perf_counter() - started, 1)
    out["silver_runs"] = out["bronze_commits"] // silver_runs
    console.print(
        f"  bronze: {rows.num_rows:,} readings in {out['bronze_commits']} commits, {out['silver_runs']} silver runs"
    )
    # The hot tables with a TTL well beyond the retention (the backstop archival needs).
    ensure_hot_tables(
        settings.model_copy(update={"hotstore": settings.hotstore.model_copy(update={"hot_retention_days": 3650})})
    )
    client = hotstore_client(settings)
    try:
        client.insert_arrow(TELEMETRY_STREAM.hot_table, raw_rows(TELEMETRY_STREAM, rows))
    finally:
        client.close()
    update_silver(lake, TELEMETRY_STREAM)
    for tier in ("silver", "bronze"):
        # The machine-hour read on bronze only: a pyarrow filter on a string column fails on
        # silver files written by a delta-rs merge (their strings are Utf8View; docs/cold-tier.md).
        before_read = _machine_hour_read(settings, tier, start_ms) if tier == "bronze" else (None, None)
        report = maintain_table(lake.table_uri(tier, "telemetry"), lake.storage_options, name=f"{tier}/telemetry")
        after_read = _machine_hour_read(settings, tier, start_ms) if tier == "bronze" else (None, None)
        out[f"maintenance_{tier}"] = {
            "files_before": report.files_before,
            "files_after": report.files_after,
            "mb_before": round(report.bytes_before / 2**20, 2),
            "mb_after": round(report.bytes_after / 2**20, 2),
            "z_ordered_partitions": len(report.z_ordered_partitions),
            "seconds": report.seconds,
            "machine_hour_read_s_before": before_read[0],
            "machine_hour_read_s_after": after_read[0],
            "machine_hour_rows": after_read[1],
        }
        console.print(f"  maintenance {tier}: {out[f'maintenance_{tier}']}")
    try:  # what the incremental silver asset does next: it diffs file names, so it re-reads the rewritten day
        after = update_silver(lake, TELEMETRY_STREAM)
        out["silver_after_bronze_compaction"] = {
            "bronze_rows_read": after["bronze_rows_read"],
            "rows_inserted": after["rows_inserted"],
            "seconds": after["seconds"],
        }
    except Exception as exc:  # reported, not hidden: the silver asset's own failure
        out["silver_after_bronze_compaction"] = {"error": f"{type(exc).__name__}: {exc}"}
    console.print(f"  silver after bronze compaction: {out['silver_after_bronze_compaction']}")
    hot = HotStore(
        settings.model_copy(update={"hotstore": settings.hotstore.model_copy(update={"hot_retention_days": 1})})
    )
    archived = archive_hot_partitions(hot, lake)
    (verdict,) = archived.verdicts
    out["archival"] = {"rows": verdict.hot.rows, "dropped": verdict.dropped, "verify_s_per_partition": verdict.seconds}
    console.print(f"  archival: {out['archival']}")
    checksums, times = [], []
    for _ in range(2):
        started = time.perf_counter()
        (rebuilt,) = rebuild_silver(lake, TELEMETRY_STREAM, day, day)
        times.append(time.perf_counter() - started)
        checksums.append(rebuilt.checksum)
    out["silver_rebuild_day_s"] = [round(t, 2) for t in times]
    out["silver_rebuild_identical"] = checksums[0] == checksums[1]
    started = time.perf_counter()
    (restored,) = rehydrate_hot(HotStore(settings), lake, TELEMETRY_STREAM, day, day)
    out["rehydrate_day_s"] = round(time.perf_counter() - started, 2)
    out["rehydrate_rows"] = restored.bronze_rows
    console.print(f"  rebuild silver day: {out['silver_rebuild_day_s']} s; re-hydrate: {out['rehydrate_day_s']} s")
    return out


def _gold_week(settings: Settings, size: dict[str, Any], console: Console) -> dict[str, Any]:
    import dagster as dg

    from plantstream.assets.cold.backfill import rebuild_silver
    from plantstream.assets.gold.assets import GOLD_ASSETS
    from plantstream.assets.silver import SILVER_ASSETS
    from plantstream.contract.streams import STREAMS
    from plantstream.orchestration.resources import Lake, build_resources
    from plantstream.simulator.history import history_plant, write_history, write_plant_file

    plant = history_plant(size["gold_machines"])  # gold computes against the plant file the settings name
    settings = settings.model_copy(
        update={"plant_file": str(write_plant_file(plant, settings.state_dir / "bench-cold-plant.yaml"))}
    )
    today = dt.datetime.now(dt.UTC).date()
    first = today - dt.timedelta(days=size["gold_days"] + 1)
    last = first + dt.timedelta(days=size["gold_days"] - 1)
    start_ms = int(dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp() * 1000)
    history = write_history(
        settings, start_ms=start_ms, hours=24 * size["gold_days"], plant=plant, sample_period_s=GOLD_SAMPLE_PERIOD_S
    )
    resources = build_resources(settings)
    started = time.perf_counter()
    assert dg.materialize(SILVER_ASSETS, resources=resources, run_config=QUIET).success
    silver_s = time.perf_counter() - started
    started = time.perf_counter()
    for spec in STREAMS:
        rebuild_silver(Lake(settings), spec, first, last)
    rebuild_s = time.perf_counter() - started
    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    started = time.perf_counter()
    assert dg.materialize(GOLD_ASSETS, resources=resources, tags=tags, run_config=QUIET).success
    gold_s = time.perf_counter() - started
    out = {
        "days": size["gold_days"],
        "machines": size["gold_machines"],
        "bronze_rows": history.rows,
        "silver_incremental_s": round(silver_s, 1),
        "silver_rebuild_range_s": round(rebuild_s, 1),
        "gold_single_run_range_s": round(gold_s, 1),
    }
    console.print(f"  gold backfill: {out}")
    return out


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:  # settings unused: own platform
    from plantstream.services.isolated import isolated_settings
    from plantstream.services.supervisor import LocalPlatform

    size = QUICK if quick else FULL
    figures: dict[str, Any] = {"quick": quick, **size}
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="plantstream-bench-cold-") as tmp:
        base = isolated_settings(Path(tmp) / "state")
        platform = LocalPlatform(base, services=["seaweedfs", "hotstore"], die_with_parent=True)
        platform.up()
        try:
            day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
            for name, step in (("stream_day", _stream_day), ("gold_week", _gold_week)):
                bench = base.model_copy(
                    update={
                        "lake": base.lake.model_copy(update={"prefix": f"bench/{name}"}),
                        "hotstore": base.hotstore.model_copy(update={"database": f"bench_{name}"}),
                    }
                )
                console.print(f"[bold]{name}[/]")
                try:
                    figures[name] = (
                        step(bench, size, day, console) if name == "stream_day" else step(bench, size, console)
                    )
                except Exception as exc:  # a failed step is reported and the others still run
                    failed.append(name)
                    figures[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
                    console.print(f"[red]{name} failed: {exc}[/]")
        finally:
            platform.down()
    figures["failed_steps"] = failed
    table = Table("figure", "value")
    for key, value in figures.items():
        table.add_row(key, str(value))
    console.print(table)
    write_results("cold", figures, quick=quick)
    return figures
