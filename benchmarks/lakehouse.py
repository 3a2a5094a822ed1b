"""Lakehouse benchmark: one simulated plant-day bronze -> silver -> gold, and three analyst queries.

* **Data** (not timed): a plant of 200 machines with 10 signals each (the simulator's 11
  signals less one per machine type) for one UTC day, written to bronze with the
  historian-import path (``plantstream.simulator.history``): one reading per machine and
  signal every 10 s, 17,280,000 readings, plus the day's machine events, parts and
  energy readings.  ``--quick``: 20 machines for 6 hours.
* **bronze -> silver -> gold** (timed): the code location's silver assets, then every
  gold asset for the day, run by Dagster in one child process (the in-process executor,
  so one process holds every step: its peak RSS is the figure).  Wall time from the
  start of the silver run to the end of the gold run.
* **Analyst queries** (timed, best of 3, through :class:`plantstream.connect.lake_sql.LakeSql`,
  the code path of ``plantstream sql``, so each includes opening the Delta tables): one
  machine's day at full resolution (silver telemetry), a line's OEE for a month (gold),
  a 90-day trend from the daily rollups (gold).  The month and the 90 days of gold are
  the benchmark day's gold rows copied to the days before it (not timed): query cost
  depends on rows and files, not on their values.

On its own platform (SeaweedFS in a temporary state dir), so it never touches a
developer's lake.  Run: ``plantstream bench lakehouse [--quick] [--json]``.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import resource
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.contract.signals import SIGNALS
from plantstream.services.isolated import isolated_settings
from plantstream.services.supervisor import LocalPlatform
from plantstream.settings import Settings
from plantstream.simulator.engine import utc_ms
from plantstream.simulator.history import history_plant, write_history, write_plant_file

DAY = dt.date(2026, 3, 2)
#: Per machine type, every signal of the simulator but one: 10 signals per machine.
TEN_SIGNALS = {
    "cnc_mill": [s for s in SIGNALS if s != "belt_speed"],
    "press": [s for s in SIGNALS if s != "belt_speed"],
    "robot_cell": [s for s in SIGNALS if s != "belt_speed"],
    "conveyor": [s for s in SIGNALS if s != "tool_wear"],
}
FULL = {"machines": 200, "hours": 24.0, "sample_period_s": 10.0}
QUICK = {"machines": 20, "hours": 6.0, "sample_period_s": 10.0}
REPEATS = 3


def _bronze_to_gold(settings: Settings, day: str, out: Any) -> None:
    """Child process: silver, then gold for ``day``, through the code location's assets."""
    try:
        import warnings

        import dagster as dg

        from plantstream.orchestration.definitions import build_definitions

        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # the step log is not the output

        defs = build_definitions(settings)
        assets = list(defs.assets or [])
        instance = dg.DagsterInstance.ephemeral()
        silver = dg.AssetSelection.assets(*(["silver", s] for s in ("telemetry", "events", "quality", "energy")))
        started = time.perf_counter()
        done = dg.materialize(assets, selection=silver, instance=instance, resources=defs.resources, run_config=quiet)
        silver_s = time.perf_counter() - started
        gold = dg.materialize(
            assets,
            selection=dg.AssetSelection.groups("gold"),
            partition_key=day,
            instance=instance,
            resources=defs.resources,
        )
        total = time.perf_counter() - started
        steps: dict[str, float] = {}
        for result in (done, gold):
            for event in result.all_events:
                if event.event_type_value == "STEP_SUCCESS":
                    steps[event.step_key] = round(event.event_specific_data.duration_ms / 1000, 2)
        out.put(
            {
                "ok": done.success and gold.success,
                "bronze_to_gold_s": round(total, 2),
                "silver_s": round(silver_s, 2),
                "gold_s": round(total - silver_s, 2),
                "steps_s": steps,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    except Exception:  # the parent reports it as a failed step
        out.put({"ok": False, "error": traceback.format_exc()[-3000:]})


def _copies(settings: Settings, name: str, day: dt.date, count: int) -> None:
    """The day's gold rows of ``name`` copied to the ``count`` days before it (query data, not timed)."""
    from plantstream.assets.gold.tables import read_gold_days, write_gold_day
    from plantstream.orchestration.resources import Lake

    lake = Lake(settings)
    rows = read_gold_days(lake, name, day, day)
    for back in range(1, count + 1):
        other = day - dt.timedelta(days=back)
        shifted = rows.set_column(
            rows.schema.get_field_index("day"), "day", pa.array([other] * rows.num_rows, pa.date32())
        )
        for column in ("window_start", "window_end", "shift_start", "last_ts"):
            if column in shifted.column_names:
                index = shifted.schema.get_field_index(column)
                moved = pc.subtract(shifted[column], pa.scalar(dt.timedelta(days=back)))
                shifted = shifted.set_column(index, column, moved.cast(shifted.schema.field(column).type))
        write_gold_day(lake, name, other, shifted)


def _queries(settings: Settings, day: dt.date, machine: str, line: str) -> dict[str, tuple[str, int, float]]:
    from plantstream.connect.lake_sql import LakeSql

    sql = LakeSql(settings)
    month, quarter = day - dt.timedelta(days=29), day - dt.timedelta(days=89)
    queries = {
        "machine_day": "SELECT event_time, signal, value FROM silver.telemetry "
        f"WHERE event_date = DATE '{day}' AND machine_id = '{machine}' ORDER BY event_time, signal",
        "line_oee_month": "SELECT day, shift, availability, performance, quality, oee FROM gold.oee "
        f"WHERE scope = 'line' AND line = '{line}' AND day BETWEEN DATE '{month}' AND DATE '{day}' "
        "ORDER BY day, window_start",
        "trend_90d": "SELECT day, line, sum(count * mean) / sum(count) AS mean, max(max) AS max "
        f"FROM gold.telemetry_daily WHERE signal = 'vibration' AND day BETWEEN DATE '{quarter}' AND DATE '{day}' "
        "GROUP BY day, line ORDER BY day, line",
    }
    out = {}
    for name, query in queries.items():
        times, rows = [], 0
        for _ in range(REPEATS):
            result = sql.query(query)
            times.append(result.seconds)
            rows = result.table.num_rows
        out[name] = (query, rows, min(times))
    return out


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:
    """The benchmark on a platform of its own (``settings`` are not used: it never touches a real lake)."""
    size = QUICK if quick else FULL
    failed: list[str] = []
    figures: dict[str, Any] = {"quick": quick, "machines": size["machines"], "sample_period_s": size["sample_period_s"]}
    with tempfile.TemporaryDirectory(prefix="plantstream-bench-lakehouse-") as tmp:
        base = isolated_settings(Path(tmp) / "state")
        platform = LocalPlatform(base, services=["seaweedfs"], die_with_parent=True)
        platform.up()
        try:
            plant = history_plant(size["machines"], signals=TEN_SIGNALS, sample_period_s=size["sample_period_s"])
            plant_file = write_plant_file(plant, Path(tmp) / "plant.yaml")
            bench = base.model_copy(update={"plant_file": str(plant_file)})
            console.print(f"[bold]history[/]: {size['machines']} machines x 10 signals, {size['hours']:g} h ...")
            history = write_history(bench, start_ms=utc_ms(DAY.year, DAY.month, DAY.day), hours=size["hours"])
            figures.update(
                readings=history.rows["telemetry"],
                signals_per_machine=len(plant.machines()[0].signals),
                bronze_rows=history.rows,
                history_s=history.seconds["total"],
            )
            console.print(f"  {history.rows['telemetry']:,} readings in {history.seconds['total']:.0f} s (not timed)")
            queue = multiprocessing.get_context("spawn").Queue()
            child = multiprocessing.get_context("spawn").Process(
                target=_bronze_to_gold, args=(bench, DAY.isoformat(), queue)
            )
            child.start()
            result = queue.get()
            child.join()
            if not result.get("ok"):
                failed.append("bronze_to_gold")
                figures["error"] = result.get("error", "a Dagster run failed")
            figures.update({k: v for k, v in result.items() if k not in ("ok", "error")})
            if not failed:
                _copies(bench, "oee", DAY, 29)
                _copies(bench, "telemetry_daily", DAY, 89)
                machine = plant.machines()[0]
                timed = _queries(bench, DAY, machine.machine_id, machine.line)
                figures["query_ms"] = {name: round(seconds * 1000, 1) for name, (_, _, seconds) in timed.items()}
                figures["query_rows"] = {name: rows for name, (_, rows, _) in timed.items()}
                figures["queries"] = {name: query for name, (query, _, _) in timed.items()}
        finally:
            platform.down()
    figures["failed_steps"] = failed
    _print(console, figures)
    write_results("lakehouse", figures, quick=quick)
    return figures


def _print(console: Console, f: dict[str, Any]) -> None:
    table = Table(title=f"lakehouse: {f['machines']} machines, {f.get('readings', 0):,} readings")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("bronze_to_gold_s", "silver_s", "gold_s", "peak_rss_mb", "history_s"):
        if key in f:
            table.add_row(key, str(f[key]))
    for name, ms in f.get("query_ms", {}).items():
        table.add_row(f"query {name} (ms)", f"{ms} ({f['query_rows'][name]:,} rows)")
    for step, seconds in sorted(f.get("steps_s", {}).items(), key=lambda kv: -kv[1])[:8]:
        table.add_row(f"  step {step}", str(seconds))
    console.print(table)
    if f.get("failed_steps"):
        console.print(f"[red]failed: {f['failed_steps']}[/]\n{f.get('error', '')}")


__all__ = ["run"]
