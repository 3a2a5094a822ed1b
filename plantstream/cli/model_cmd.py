"""``plantstream train``, ``plantstream model ...`` and ``plantstream simulate history``: the failure model.

Progress goes to stderr; with ``--json`` the result is one JSON line, last on stdout.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from plantstream.cli.common import emit_json_line, settings_or_exit

model_app = typer.Typer(help="The failure model: registry, rollback, features, scores, drift.", no_args_is_help=True)


def _day(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a day (YYYY-MM-DD)") from None


def _progress(console: Console):
    def say(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    return say


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def train(  # noqa: PLR0917 - typer: one parameter per option
    first_day: Annotated[str | None, typer.Option(help="first day of the training window (YYYY-MM-DD)")] = None,
    last_day: Annotated[str | None, typer.Option(help="last day (default: the newest day silver has)")] = None,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
    max_iter: Annotated[int, typer.Option(help="boosting iterations")] = 300,
    importance_repeats: Annotated[int, typer.Option(help="permutation-importance repeats (the slow part)")] = 3,
    refresh_silver: Annotated[bool, typer.Option(help="bring silver up to date with bronze first")] = True,
    rebuild_features: Annotated[bool, typer.Option(help="recompute the window's features and labels")] = True,
    negative_control: Annotated[
        int | None, typer.Option(help="gate self-test: train on labels permuted with this seed; never promoted")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """Train the failure model on the current lake: features, labels, training, baseline and the gate.

    Registers the candidate in MLflow and moves the champion alias (announced on
    factory.models.promotions) only if it beats the current champion on the same held-out
    period by PLANTSTREAM_MODELS__GATE_MARGIN.  A refusal is reported loudly on stderr and as
    "promoted": false; the exit code is 0 either way (1: the pipeline itself failed).
    """
    from plantstream.assets.predictive_maintenance.pipeline import PipelineError, train_on_lake

    settings = settings_or_exit()
    console = Console(stderr=True)
    model_config: dict[str, Any] = {"seed": seed, "max_iter": max_iter, "importance_repeats": importance_repeats}
    if negative_control is not None:
        model_config["negative_control_seed"] = negative_control
    try:
        result = train_on_lake(
            settings,
            first_day=_day(first_day),
            last_day=_day(last_day),
            refresh_silver=refresh_silver,
            rebuild_features=rebuild_features,
            model_config=model_config,
            progress=_progress(console),
        )
    except (PipelineError, LookupError) as exc:
        console.print(f"[red]train failed: {exc}[/red]")
        raise typer.Exit(1) from None
    line = _json_safe(result.json_line())
    verdict = "PROMOTED" if result.promoted else "GATE REFUSED (the champion stays)"
    style = "green" if result.promoted else "bold red"
    console.print(
        f"[{style}]{verdict}[/{style}]: model v{line['model_version']}, champion v{line['champion_version']}",
    )
    console.print(f"  {line['gate_reason']}", markup=False)
    console.print(
        f"  test PR-AUC {line['pr_auc']}, F1 {line['f1']} (rule {line['baseline_f1']}), "
        f"median lead {line['median_lead_time_min']} min; MLflow run {line['mlflow_run']}",
        markup=False,
    )
    if json_output:
        emit_json_line(line)


@model_app.command("rollback")
def rollback_command(
    to: Annotated[
        str | None, typer.Option(help="version to point champion at (default: the previous champion)")
    ] = None,
    reason: Annotated[str, typer.Option(help="why (recorded in the announcement)")] = "",
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """Move the champion alias back to the previous champion (or --to VERSION), and announce it."""
    from plantstream.models.registry import rollback

    settings = settings_or_exit()
    console = Console(stderr=True)
    try:
        promotion = rollback(settings, to_version=to, reason=reason)
    except (LookupError, ValueError) as exc:
        console.print(f"[red]rollback refused: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"champion of {promotion.model}: v{promotion.previous_version} -> v{promotion.version} (announced, seq "
        f"{promotion.seq})"
    )
    if json_output:
        emit_json_line(
            {
                "model": promotion.model,
                "version": promotion.version,
                "previous_version": promotion.previous_version,
                "seq": promotion.seq,
            }
        )


@model_app.command("status")
def status_command(
    limit: Annotated[int, typer.Option(help="newest versions to list")] = 10,
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """The registered versions, the champion and each gate decision."""
    from dataclasses import asdict

    from plantstream.models.registry import versions

    settings = settings_or_exit()
    found = versions(settings, limit=limit)
    table = Table("version", "champion", "gate", "previous champion", "reason")
    for v in found:
        table.add_row(v.version, "yes" if v.champion else "", v.decision, v.previous_champion, v.reason[:90])
    Console(stderr=json_output).print(table)
    if json_output:
        emit_json_line({"model": settings.models.registered_model, "versions": [asdict(v) for v in found]})


@model_app.command("features")
def features_command(
    first_day: Annotated[str, typer.Option("--from", help="first day (YYYY-MM-DD)")],
    last_day: Annotated[str, typer.Option("--to", help="last day (YYYY-MM-DD)")],
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """Backfill the feature and label tables for a range of days (one run, as a Dagster backfill)."""
    from plantstream.assets.predictive_maintenance.pipeline import PipelineError, build_features

    settings = settings_or_exit()
    console = Console(stderr=True)
    first, last = _day(first_day), _day(last_day)
    assert first is not None and last is not None
    try:
        report = build_features(settings, first, last, progress=_progress(console))
    except (PipelineError, LookupError) as exc:
        console.print(f"[red]features failed: {exc}[/red]")
        raise typer.Exit(1) from None
    f, labels = report["failure_features"], report["failure_labels"]
    console.print(
        f"{f['dagster/row_count']:,} feature rows of {f['machines']} machines, {labels['dagster/row_count']:,} labels "
        f"(prevalence {labels['prevalence']})"
    )
    if json_output:
        emit_json_line(_json_safe(report))


@model_app.command("score")
def score_command(
    day: Annotated[str | None, typer.Option(help="day to score (default: yesterday, UTC)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """Batch scores of one day by the champion (gold/failure_scores)."""
    from plantstream.assets.predictive_maintenance.pipeline import PipelineError, score_on_lake

    settings = settings_or_exit()
    console = Console(stderr=True)
    target = _day(day) or dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    try:
        report = score_on_lake(settings, target, progress=_progress(console))
    except (PipelineError, LookupError) as exc:
        console.print(f"[red]score failed: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"{target}: {report['dagster/row_count']:,} rows scored by v{report['model_version']}, {report['alerts']:,} "
        f"alerts; precision against the labels {report['precision_vs_labels']}"
    )
    if json_output:
        emit_json_line(_json_safe({"day": target.isoformat(), **report}))


@model_app.command("drift")
def drift_command(json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False) -> None:
    """What the drift sensor sees: PSI per feature of the newest complete day, and the alerts' precision."""
    from dataclasses import asdict

    from plantstream.assets.predictive_maintenance.monitoring import evaluate_champion
    from plantstream.orchestration.resources import Lake

    settings = settings_or_exit()
    health = evaluate_champion(Lake(settings))
    console = Console(stderr=json_output)
    console.print(f"champion v{health.champion}, features of {health.day}")
    table = Table("feature", "PSI")
    for name, value in sorted(health.psi.items(), key=lambda item: -item[1])[:15]:
        table.add_row(name, f"{value:.3f}")
    console.print(table)
    console.print(f"precision on {health.precision_day}: {health.precision} (test {health.test_precision})")
    console.print("retrain: " + ("; ".join(health.reasons) if health.retrain else "no"))
    if json_output:
        emit_json_line(_json_safe({**asdict(health), "retrain": health.retrain}))


def simulate_history(  # noqa: PLR0917 - typer: one parameter per option
    weeks: Annotated[float, typer.Option(help="simulated weeks")] = 3.0,
    machines: Annotated[int, typer.Option(help="machines (lines of four: mill, press, robot cell, conveyor)")] = 50,
    period: Annotated[float, typer.Option(help="simulation step and reading interval, seconds")] = 5.0,
    seed: Annotated[int, typer.Option(help="physics seed")] = 2020,
    start: Annotated[str | None, typer.Option(help="first day (default: the day after bronze's last day)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """Write weeks of a simulated plant into bronze (the historian-import path) and its ground-truth log.

    The ground truth goes to <ground-truth dir>/history-<start>-<machines>m/ground_truth.jsonl,
    where bronze/ground_truth imports it from; the plant file next to it (for gold's OEE:
    PLANTSTREAM_PLANT_FILE).  Refuses to write a range that overlaps what bronze holds.
    """
    from plantstream.assets.predictive_maintenance.ground_truth import ground_truth_dir
    from plantstream.orchestration.resources import Lake
    from plantstream.simulator.engine import utc_ms
    from plantstream.simulator.history import history_plant, write_history, write_plant_file

    settings = settings_or_exit()
    console = Console(stderr=True)
    lake = Lake(settings)
    held = lake.days("bronze", "telemetry")
    first = _day(start)
    if first is None:
        first = held[-1] + dt.timedelta(days=1) if held else dt.datetime.now(dt.UTC).date() - dt.timedelta(weeks=weeks)
    last = first + dt.timedelta(days=math.ceil(7 * weeks) - 1)
    overlap = [d for d in held if first <= d <= last]
    if overlap:
        console.print(f"[red]bronze already holds {overlap[0]} .. {overlap[-1]}: choose --start after {held[-1]}[/red]")
        raise typer.Exit(1)
    folder = ground_truth_dir(settings) / f"history-{first.isoformat()}-{machines}m"
    plant = history_plant(machines, sample_period_s=period, seed=seed)
    plant_file = write_plant_file(plant, folder / "plant.yaml")
    console.print(f"simulating {weeks} weeks of {machines} machines from {first} at {period} s ...")
    result = write_history(
        settings,
        start_ms=utc_ms(first.year, first.month, first.day),
        hours=24 * 7 * weeks,
        plant=plant,
        seed=seed,
        ground_truth=folder / "ground_truth.jsonl",
    )
    rows = ", ".join(f"{k} {v:,}" for k, v in result.rows.items())
    console.print(f"wrote {rows} in {result.seconds['total']:.0f} s; ground truth {folder / 'ground_truth.jsonl'}")
    console.print(f"plant file: {plant_file} (PLANTSTREAM_PLANT_FILE for gold)")
    if json_output:
        emit_json_line(
            {
                "first_day": first.isoformat(),
                "weeks": weeks,
                "machines": machines,
                "rows": result.rows,
                "seconds": result.seconds,
                "ground_truth": str(folder / "ground_truth.jsonl"),
                "plant_file": str(plant_file),
            }
        )
