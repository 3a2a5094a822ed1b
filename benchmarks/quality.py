"""Data-quality benchmark: the check time of one daily partition of a 200-machine plant.

The issue asks that the checks be cheap enough to run on every daily partition; this
measures it on the data the lakehouse benchmark uses.

* **Data** (not timed): 200 machines with 10 signals each for one UTC day, one reading
  per machine and signal every 10 s (17,280,000 readings), written to bronze with the
  historian-import path, then silver and the day's gold through the code location's
  assets.  ``--quick``: 20 machines for 6 hours.
* **silver checks** (timed): the production job ``silver_quality`` for the day (the four
  silver suites, Great Expectations and the Data Docs included) on the in-process
  executor: wall time, and each check step's own time from its ``STEP_SUCCESS`` event.
  The first step pays Great Expectations' import and context (≈ 3.5 s per process).
* **gold checks** (timed): the checks of every gold table for the day, likewise.

In a child process (its peak RSS is the figure) on a platform of its own (SeaweedFS in a
temporary state dir).  Run: ``plantstream bench quality [--quick] [--json]``.
"""

from __future__ import annotations

import multiprocessing
import resource
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.lakehouse import DAY, FULL, QUICK, TEN_SIGNALS
from plantstream.benchmarks.results_file import write_results
from plantstream.services.isolated import isolated_settings
from plantstream.services.supervisor import LocalPlatform
from plantstream.settings import Settings
from plantstream.simulator.engine import utc_ms
from plantstream.simulator.history import history_plant, write_history, write_plant_file


def _timed_run(job, instance, day: str) -> tuple[float, dict[str, float], bool, list[str]]:
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        tags={"dagster/partition": day},
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        raise_on_error=False,
    )
    wall = time.perf_counter() - started
    steps = {
        e.step_key: round(e.event_specific_data.duration_ms / 1000, 2)
        for e in result.all_events
        if e.event_type_value == "STEP_SUCCESS"
    }
    failed = sorted(
        f"{e.asset_key.to_user_string()}:{e.check_name}: {(e.description or '')[:300]}"
        for e in result.get_asset_check_evaluations()
        if not e.passed
    )
    return round(wall, 2), steps, result.success, failed


def _check_day(settings: Settings, day: str, out: Any) -> None:
    """Child process: silver and gold (not timed), then the silver and the gold checks of ``day`` (timed)."""
    try:
        import warnings

        import dagster as dg

        from plantstream.assets.gold.assets import GOLD_TABLES
        from plantstream.assets.gold.calendar import GOLD_PARTITIONS
        from plantstream.orchestration.definitions import build_definitions

        warnings.filterwarnings("ignore", category=dg.BetaWarning)
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        gold_checks = dg.define_asset_job(
            "gold_quality",
            selection=dg.AssetSelection.checks_for_assets(*(dg.AssetKey(["gold", t]) for t in GOLD_TABLES)),
            partitions_def=GOLD_PARTITIONS,
        )
        defs = dg.Definitions.merge(build_definitions(settings), dg.Definitions(jobs=[gold_checks]))
        assets = list(defs.assets or [])
        instance = dg.DagsterInstance.ephemeral()
        silver = dg.AssetSelection.assets(*(["silver", s] for s in ("telemetry", "events", "quality", "energy")))
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        started = time.perf_counter()
        dg.materialize(assets, selection=silver, instance=instance, resources=defs.resources, run_config=quiet)
        dg.materialize(
            assets, selection=dg.AssetSelection.groups("gold"), partition_key=day, instance=instance,
            resources=defs.resources, run_config=quiet,
        )  # fmt: skip
        prepare_s = time.perf_counter() - started
        silver_s, silver_steps, silver_ok, silver_failed = _timed_run(
            defs.resolve_job_def("silver_quality"), instance, day
        )
        gold_s, gold_steps, gold_ok, gold_failed = _timed_run(defs.resolve_job_def("gold_quality"), instance, day)
        out.put(
            {
                "ok": silver_ok and gold_ok,
                "prepare_s": round(prepare_s, 2),
                "silver_checks_s": silver_s,
                "gold_checks_s": gold_s,
                "checks_per_day_s": round(silver_s + gold_s, 2),
                "steps_s": {**silver_steps, **gold_steps},
                "failed_checks": silver_failed + gold_failed,  # a clean simulated day: expected empty
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    except Exception:  # the parent reports it as a failed step
        out.put({"ok": False, "error": traceback.format_exc()[-3000:]})


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:
    """The benchmark on a platform of its own (``settings`` are not used: it never touches a real lake)."""
    size = QUICK if quick else FULL
    failed: list[str] = []
    figures: dict[str, Any] = {"quick": quick, "machines": size["machines"], "sample_period_s": size["sample_period_s"]}
    with tempfile.TemporaryDirectory(prefix="plantstream-bench-quality-") as tmp:
        base = isolated_settings(Path(tmp) / "state")
        platform = LocalPlatform(base, services=["seaweedfs"], die_with_parent=True)
        platform.up()
        try:
            plant = history_plant(size["machines"], signals=TEN_SIGNALS, sample_period_s=size["sample_period_s"])
            bench = base.model_copy(update={"plant_file": str(write_plant_file(plant, Path(tmp) / "plant.yaml"))})
            console.print(f"[bold]history[/]: {size['machines']} machines x 10 signals, {size['hours']:g} h ...")
            history = write_history(bench, start_ms=utc_ms(DAY.year, DAY.month, DAY.day), hours=size["hours"])
            figures.update(readings=history.rows["telemetry"], bronze_rows=history.rows, day=DAY.isoformat())
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            child = context.Process(target=_check_day, args=(bench, DAY.isoformat(), queue))
            child.start()
            result = queue.get()
            child.join()
            if not result.get("ok"):
                failed.append("checks")
                figures["error"] = result.get("error", "a check step failed")
            figures.update({k: v for k, v in result.items() if k not in ("ok", "error")})
        finally:
            platform.down()
    figures["failed_steps"] = failed
    _print(console, figures)
    write_results("quality", figures, quick=quick)
    return figures


def _print(console: Console, f: dict[str, Any]) -> None:
    table = Table(title=f"quality: one day of {f['machines']} machines, {f.get('readings', 0):,} readings")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in ("checks_per_day_s", "silver_checks_s", "gold_checks_s", "peak_rss_mb", "prepare_s"):
        if key in f:
            table.add_row(key, str(f[key]))
    for step, seconds in sorted(f.get("steps_s", {}).items(), key=lambda kv: -kv[1])[:8]:
        table.add_row(f"  step {step}", str(seconds))
    console.print(table)
    if f.get("failed_checks"):
        console.print(f"[yellow]checks that failed on the simulated day: {f['failed_checks']}[/]")
    if f.get("failed_steps"):
        console.print(f"[red]failed: {f['failed_steps']}[/]\n{f.get('error', '')}")


__all__ = ["run"]
