"""The gold assets: daily-partitioned Delta tables computed from silver (thin Dagster wrappers).

Every asset works the same way: for each day of the run (one partition, or a range in a
single-run backfill) it reads the silver rows that day needs (``inputs.py``), computes the
table with the pure functions of this package, and replaces the day's partition
(``tables.py``).  Dependencies are on the ``silver/<stream>_by_day`` assets with the
partition mappings that match those reads, which is what makes exactly the right gold days
stale after a late reading (``assets/silver_days.py``).
"""

# No `from __future__ import annotations`: Dagster inspects the context annotation at runtime.
import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from plantstream.assets.gold.calendar import GOLD_PARTITIONS, machines_of, parse_day, plant_of
from plantstream.assets.gold.inputs import read_day_inputs, read_day_parts
from plantstream.assets.gold.parts import ENERGY_SCHEMA, PARETO_SCHEMA, energy_rows, quality_pareto_rows
from plantstream.assets.gold.presentation import downtime_pareto_png, image_metadata, oee_trend_png, preview
from plantstream.assets.gold.rollups import ROLLUP_SCHEMA, telemetry_rollups
from plantstream.assets.gold.states import (
    DOWNTIME_SCHEMA,
    OEE_SCHEMA,
    RELIABILITY_SCHEMA,
    downtime_rows,
    oee_rows,
    reliability_rows,
)
from plantstream.assets.gold.tables import read_gold_days, write_gold_day
from plantstream.assets.silver_days import SILVER_DAYS
from plantstream.orchestration.resources import Lake
from plantstream.quality_checks.gate import refuse_unless_inputs_passed
from plantstream.settings import Settings

OWNERS = ["team:data-platform"]
GROUP = "gold"
KINDS = {"delta", "s3"}
TREND_DAYS = 14
#: A backfilled range runs as one step that writes its days one after the other.
SINGLE_RUN = dg.BackfillPolicy.single_run()
RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def silver_days(stream: str, *, before: int = 0, after: int = 0) -> dg.AssetDep:
    """A dependency on the silver days ``D - before .. D + after`` of gold day ``D``."""
    mapping = dg.TimeWindowPartitionMapping(
        start_offset=-before, end_offset=after, allow_nonexistent_upstream_partitions=True
    )
    return dg.AssetDep(SILVER_DAYS[stream], partition_mapping=mapping)


#: The reads of ``inputs.read_day_inputs``: state events, parts and energy of D - 1 .. D + 1.
STATE_DEPS = [silver_days(s, before=1, after=1) for s in ("events", "quality", "energy")]


def _schema_metadata(schema: pa.Schema, extra: dict[str, object] | None = None) -> dict[str, object]:
    return {
        "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema]),
        "partitioned_by": "day (UTC), one Delta partition per Dagster partition",
        **(extra or {}),
    }


def _gold_spec(name: str, schema: pa.Schema, description: str, deps: list[dg.AssetDep]) -> dg.AssetSpec:
    return dg.AssetSpec(
        ["gold", name],
        description=description,
        deps=deps,
        group_name=GROUP,
        owners=OWNERS,
        kinds=KINDS,
        metadata=_schema_metadata(schema),
        partitions_def=GOLD_PARTITIONS,
    )


def run_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days of this run: its one partition, or every partition of a backfilled range."""
    return [parse_day(key) for key in context.partition_keys]


def _written(lake: Lake, name: str, days: list[dt.date], rows: int) -> dict[str, dg.MetadataValue]:
    return {
        "dagster/row_count": dg.MetadataValue.int(rows),
        "dagster/uri": dg.MetadataValue.text(lake.table_uri("gold", name)),
        "days": dg.MetadataValue.text(", ".join(d.isoformat() for d in days[:5]) + (" ..." if len(days) > 5 else "")),
    }


def _plot_path(settings: Settings, name: str, day: dt.date):
    return settings.state_dir / "gold" / "plots" / f"{name}-{day.isoformat()}.png"


OEE_SPEC = _gold_spec(
    "oee",
    OEE_SCHEMA,
    "OEE per machine and line, for the UTC day and each shift segment in it: availability, performance, quality, "
    "OEE, the time waterfall (planned production, run, net run, fully productive seconds), unplanned stop seconds "
    "by reason, planned stop seconds by reason, part counts and flags. Computed by plantstream.domain.oee (oee per "
    "machine, combine per line) from silver state events and parts; ideal cycle time = the machine type's cycle_s "
    "in the plant file. Sum the seconds (never average the ratios) to roll shifts, days or lines up.",
    STATE_DEPS,
)


@dg.multi_asset(
    specs=[OEE_SPEC], partitions_def=GOLD_PARTITIONS, retry_policy=RETRY, backfill_policy=SINGLE_RUN, name="gold_oee"
)
def gold_oee(
    context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake], settings: dg.ResourceParam[Settings]
) -> Iterator[dg.MaterializeResult]:
    refuse_unless_inputs_passed(context)  # a failed blocking check of the silver days read: nothing written
    plant = plant_of(settings)
    machines = machines_of(plant)
    days = run_days(context)
    written, last = 0, OEE_SCHEMA.empty_table()
    for day in days:
        result = oee_rows(read_day_inputs(lake, day), machines, list(plant.shifts))
        if result.unknown_machines:
            context.log.warning(
                f"{day}: machines in silver but not in the plant file (no ideal cycle time, left out of OEE): "
                f"{result.unknown_machines}"
            )
        written += write_gold_day(lake, "oee", day, result.rows)
        last = result.rows
    day = days[-1]
    trend = read_gold_days(lake, "oee", day - dt.timedelta(days=TREND_DAYS - 1), day)
    lines = last.filter(pc.and_(pc.equal(last["scope"], "line"), pc.equal(last["shift"], "day")))
    yield dg.MaterializeResult(
        asset_key=OEE_SPEC.key,
        metadata={
            **_written(lake, "oee", days, written),
            "preview": preview(
                lines, ["day", "line", "machines", "availability", "performance", "quality", "oee", "run_s"]
            ),
            **image_metadata(
                oee_trend_png(trend, day) if trend.num_rows else None, "oee_trend", _plot_path(settings, "oee", day)
            ),
        },
    )


DOWNTIME_SPEC = _gold_spec(
    "downtime",
    DOWNTIME_SCHEMA,
    "Downtime events: every non-running state interval that starts in the day (full duration, also past midnight), "
    "with state, reason, planned/unplanned class, whether it is a failure (reason failure:*) and the shift it "
    "started in. `open` marks a stop no state event has ended yet.",
    STATE_DEPS,
)
RELIABILITY_SPEC = _gold_spec(
    "mtbf_mttr",
    RELIABILITY_SCHEMA,
    "MTBF and MTTR per machine and day: failures (stops with reason failure:*) starting in the day, MTTR = mean "
    "duration of those that ended, MTBF = run seconds of the day / failures (null without failures).",
    STATE_DEPS,
)


@dg.multi_asset(
    specs=[DOWNTIME_SPEC, RELIABILITY_SPEC],
    partitions_def=GOLD_PARTITIONS,
    retry_policy=RETRY,
    backfill_policy=SINGLE_RUN,
    name="gold_downtime",
)
def gold_downtime(
    context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake], settings: dg.ResourceParam[Settings]
) -> Iterator[dg.MaterializeResult]:
    refuse_unless_inputs_passed(context)  # a failed blocking check of the silver days read: nothing written
    plant = plant_of(settings)
    machines = machines_of(plant)
    days = run_days(context)
    stops_written = kpis_written = 0
    stops, kpis = DOWNTIME_SCHEMA.empty_table(), RELIABILITY_SCHEMA.empty_table()
    for day in days:
        inputs = read_day_inputs(lake, day)
        stops = downtime_rows(inputs, machines, list(plant.shifts))
        kpis = reliability_rows(oee_rows(inputs, machines, list(plant.shifts)), stops, inputs)
        stops_written += write_gold_day(lake, "downtime", day, stops)
        kpis_written += write_gold_day(lake, "mtbf_mttr", day, kpis)
    day = days[-1]
    failures = int(pc.sum(kpis["failures"]).as_py() or 0) if kpis.num_rows else 0
    yield dg.MaterializeResult(
        asset_key=DOWNTIME_SPEC.key,
        metadata={
            **_written(lake, "downtime", days, stops_written),
            "preview": preview(stops, ["machine_id", "start", "duration_s", "state", "reason", "stop_class", "shift"]),
            **image_metadata(downtime_pareto_png(stops, day), "downtime_pareto", _plot_path(settings, "downtime", day)),
        },
    )
    yield dg.MaterializeResult(
        asset_key=RELIABILITY_SPEC.key,
        metadata={
            **_written(lake, "mtbf_mttr", days, kpis_written),
            "failures": dg.MetadataValue.int(failures),
            "preview": preview(kpis, ["machine_id", "run_s", "failures", "mttr_s", "mtbf_s"]),
        },
    )


PARETO_SPEC = _gold_spec(
    "quality_pareto",
    PARETO_SCHEMA,
    "Scrapped and reworked parts by defect code per machine, line and site, ranked, with each code's share and the "
    "cumulative share (the Pareto curve) and the defect rate per part made.",
    [silver_days("quality")],
)


@dg.multi_asset(
    specs=[PARETO_SPEC],
    partitions_def=GOLD_PARTITIONS,
    retry_policy=RETRY,
    backfill_policy=SINGLE_RUN,
    name="gold_quality_pareto",
)
def gold_quality_pareto(
    context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake]
) -> Iterator[dg.MaterializeResult]:
    refuse_unless_inputs_passed(context)  # a failed blocking check of the silver days read: nothing written
    days = run_days(context)
    written, rows = 0, PARETO_SCHEMA.empty_table()
    for day in days:
        rows = quality_pareto_rows(read_day_parts(lake, day))
        written += write_gold_day(lake, "quality_pareto", day, rows)
    site = rows.filter(pc.equal(rows["scope"], "site")) if rows.num_rows else rows
    yield dg.MaterializeResult(
        asset_key=PARETO_SPEC.key,
        metadata={
            **_written(lake, "quality_pareto", days, written),
            "preview": preview(site, ["defect_code", "defect_count", "share_of_defects", "cumulative_share", "rank"]),
        },
    )


ENERGY_SPEC = _gold_spec(
    "energy_per_part",
    ENERGY_SCHEMA,
    "Energy per machine and line for the day and each shift segment: kWh from the cumulative meter (each interval "
    "between two readings shared out by time), meter resets left out, divided by good parts and by all parts.",
    [silver_days("energy", before=1, after=1), silver_days("quality", before=1, after=1)],
)


@dg.multi_asset(
    specs=[ENERGY_SPEC],
    partitions_def=GOLD_PARTITIONS,
    retry_policy=RETRY,
    backfill_policy=SINGLE_RUN,
    name="gold_energy_per_part",
)
def gold_energy_per_part(
    context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake], settings: dg.ResourceParam[Settings]
) -> Iterator[dg.MaterializeResult]:
    refuse_unless_inputs_passed(context)  # a failed blocking check of the silver days read: nothing written
    plant = plant_of(settings)
    machines = machines_of(plant)
    days = run_days(context)
    written, rows = 0, ENERGY_SCHEMA.empty_table()
    for day in days:
        rows = energy_rows(read_day_inputs(lake, day), machines, list(plant.shifts))
        written += write_gold_day(lake, "energy_per_part", day, rows)
    lines = (
        rows.filter(pc.and_(pc.equal(rows["scope"], "line"), pc.equal(rows["shift"], "day"))) if rows.num_rows else rows
    )
    yield dg.MaterializeResult(
        asset_key=ENERGY_SPEC.key,
        metadata={
            **_written(lake, "energy_per_part", days, written),
            "preview": preview(lines, ["line", "energy_kwh", "good_count", "kwh_per_good_part", "kwh_per_part"]),
        },
    )


HOURLY_SPEC = _gold_spec(
    "telemetry_hourly",
    ROLLUP_SCHEMA,
    "Hourly rollups per machine and signal (count, min, max, mean, std, p95, last) by "
    "plantstream.domain.aggregates.window_aggregates, the stream's own window definition: long-range dashboard "
    "queries read these instead of raw readings.",
    [silver_days("telemetry")],
)
DAILY_SPEC = _gold_spec(
    "telemetry_daily",
    ROLLUP_SCHEMA,
    "Daily rollups per machine and signal (count, min, max, mean, std, p95, last), window_aggregates over the UTC "
    "day: a 90-day trend is 90 rows per machine and signal.",
    [silver_days("telemetry")],
)


@dg.multi_asset(
    specs=[HOURLY_SPEC, DAILY_SPEC],
    partitions_def=GOLD_PARTITIONS,
    retry_policy=RETRY,
    backfill_policy=SINGLE_RUN,
    name="gold_telemetry_rollups",
)
def gold_telemetry_rollups(
    context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake]
) -> Iterator[dg.MaterializeResult]:
    refuse_unless_inputs_passed(context)  # a failed blocking check of the silver days read: nothing written
    days = run_days(context)
    hourly_written = daily_written = readings = 0
    daily = ROLLUP_SCHEMA.empty_table()
    for day in days:
        hourly, daily, count = telemetry_rollups(lake, day)
        hourly_written += write_gold_day(lake, "telemetry_hourly", day, hourly)
        daily_written += write_gold_day(lake, "telemetry_daily", day, daily)
        readings += count
    columns = ["machine_id", "signal", "count", "min", "mean", "max", "p95"]
    yield dg.MaterializeResult(
        asset_key=HOURLY_SPEC.key,
        metadata={
            **_written(lake, "telemetry_hourly", days, hourly_written),
            "readings": dg.MetadataValue.int(readings),
        },
    )
    yield dg.MaterializeResult(
        asset_key=DAILY_SPEC.key,
        metadata={
            **_written(lake, "telemetry_daily", days, daily_written),
            "readings": dg.MetadataValue.int(readings),
            "preview": preview(daily, columns),
        },
    )


GOLD_ASSETS = [gold_oee, gold_downtime, gold_quality_pareto, gold_energy_per_part, gold_telemetry_rollups]
GOLD_TABLES: dict[str, pa.Schema] = {
    "oee": OEE_SCHEMA,
    "downtime": DOWNTIME_SCHEMA,
    "mtbf_mttr": RELIABILITY_SCHEMA,
    "quality_pareto": PARETO_SCHEMA,
    "energy_per_part": ENERGY_SCHEMA,
    "telemetry_hourly": ROLLUP_SCHEMA,
    "telemetry_daily": ROLLUP_SCHEMA,
}
