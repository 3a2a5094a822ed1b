"""``plantstream demo``: the main job on embedded defaults, with progress and a summary."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from plantstream.cli.common import emit_json_line, settings_or_exit
from plantstream.cli.demo_insights import GoldResult, StreamInsights
from plantstream.cli.demo_model import ModelResult

STEPS = {
    "platform": "starting / checking the local platform",
    "history": "first run: simulating past days of the plant -> bronze + ground truth",
    "train": "training the failure model: silver, ground truth, features + labels, MLflow, gate (stages)",
    "live": "live plant -> OPC UA / MQTT / Modbus -> edge gateway -> Kafka (seconds)",
    "produce": "load generator: simulated plant -> Kafka",
    "stream": "draining the plant dataflow (every stream) -> hot store + bronze",
    "lakehouse": "materialising Dagster assets (bronze -> silver, every stream)",
    "gold": "gold for the run's days (OEE, downtime, quality Pareto, energy per part, rollups) + warm tier",
}


class DemoSource(StrEnum):
    edge = "edge"
    direct = "direct"


def demo(  # noqa: PLR0917 - typer: one parameter per option
    source: Annotated[
        DemoSource,
        typer.Option(help="edge: live plant over OPC UA/MQTT/Modbus through the gateway; direct: load generator"),
    ] = DemoSource.edge,
    seconds: Annotated[float | None, typer.Option(help="edge: wall seconds the live plant runs")] = None,
    minutes: Annotated[float | None, typer.Option(help="direct: simulated plant time (default from settings)")] = None,
    machines: Annotated[int | None, typer.Option(help="direct: number of machines (default from settings)")] = None,
    model: Annotated[
        bool, typer.Option(help="a trained, promoted failure model (MLflow) that the stream scores with")
    ] = True,
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line of the counts")] = False,
) -> None:
    """Run plant -> Kafka -> stream -> hot store + lake -> Dagster, and print what landed where."""
    from plantstream.cli.demo_job import run_demo

    settings = settings_or_exit()
    overrides = {"simulated_minutes": minutes, "machines": machines, "live_seconds": seconds}
    simulator = settings.simulator.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    settings = settings.model_copy(update={"simulator": simulator})
    console = Console(stderr=json_output)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def on_progress(step: str, done: int | None, total: int | None) -> None:
            for previous, task in tasks.items():
                if previous != step:
                    bar.update(task, completed=bar.tasks[task].total or 1, total=bar.tasks[task].total or 1)
            if step not in tasks:
                tasks[step] = bar.add_task(STEPS[step], total=total)
            bar.update(tasks[step], completed=done or 0, total=total)

        result = run_demo(settings, on_progress, source=source.value, with_model=model, extend_live=seconds is None)
        for task in tasks.values():
            bar.update(task, completed=bar.tasks[task].total or 1, total=bar.tasks[task].total or 1)

    produced_by = "the edge gateway" if result.source == "edge" else "the load generator"
    table = Table(
        "stream",
        f"produced ({produced_by})",
        "missing (gaps)",
        "Kafka",
        "hot store",
        "bronze",
        "silver",
        "dead letters",
        "silver total",
        title=f"PlantStream demo: {result.machines} machines, this run",
    )
    for name, s in result.streams.items():
        table.add_row(
            name,
            f"{s.produced:,}",
            f"{s.gaps_missing:,}",
            f"{s.kafka:,}",
            f"{s.hot_rows:,}",
            f"{s.bronze_rows:,}",
            f"{s.silver_rows:,}",
            f"{s.dead_letters:,}",
            f"{result.totals[name].silver_rows:,}",
            style=None if s.agrees else "red",
        )
    console.print(table)
    if result.events_by_protocol:
        console.print(
            "through the gateway by protocol: " + ", ".join(f"{p} {n:,}" for p, n in result.events_by_protocol.items())
        )
    if result.ground_truth_parts is not None:
        console.print(
            f"parts the plant made: {result.ground_truth_parts:,}; good + scrap in silver: {result.silver_parts:,}"
        )
    console.print(
        f"telemetry windows: {result.hot_windows:,}; late events (kept on the late topic): {result.late_events:,}; "
        f"platform start {result.platform_start_s:.1f} s; wall time {result.wall_s:.1f} s"
    )
    if result.insights is not None:
        _print_insights(console, result.insights)
    if result.gold is not None:
        _print_gold(console, result.gold)
    if result.model is not None:
        _print_model(console, result.model)
    verdict = "[green]counts agree[/green]" if result.counts_agree else "[red]COUNTS DISAGREE[/red]"
    console.print(
        f"per stream, {'gateway = ' if result.source == 'edge' else ''}Kafka = hot store = bronze = silver: {verdict}"
    )
    if json_output:
        emit_json_line(result.summary())
    if not result.counts_agree:
        raise typer.Exit(1)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_insights(console: Console, insights: StreamInsights) -> None:
    raised = ", ".join(f"{kind} {n:,}" for kind, n in insights.alerts_raised.items()) or "none"
    console.print(f"alerts raised by the stream this run: {raised}; open now: {insights.alerts_open:,}")
    if insights.oee:
        table = Table("line", "shift", "availability", "performance", "quality", "OEE", "parts", title="live OEE")
        for row in insights.oee:
            shift = f"{row.shift} (final)" if row.final else row.shift
            table.add_row(
                row.line, shift, _ratio(row.availability), _ratio(row.performance), _ratio(row.quality),
                _ratio(row.oee), f"{row.total_count:,}",
            )  # fmt: skip
        console.print(table)
    console.print(
        f"digital twin: {insights.twin_machines} machines ({insights.twin_stale} stale), "
        f"{insights.twin_scored} with a failure probability; failure-model alerts this run: {insights.failure_alerts}"
    )


def _print_gold(console: Console, gold: GoldResult) -> None:
    rows = ", ".join(f"{name} {n:,}" for name, n in gold.rows.items())
    console.print(f"gold for {', '.join(gold.days)}: {rows}")
    checks = f"quality checks: {gold.checks_passed} passed"
    if gold.checks_failed:
        checks += f", [red]{len(gold.checks_failed)} failed[/red] ({'; '.join(gold.checks_failed)})"
    console.print(checks)
    if gold.line_oee:
        console.print("gold OEE of the day by line: " + ", ".join(f"{k} {_ratio(v)}" for k, v in gold.line_oee.items()))


def _figure(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _print_model(console: Console, model: ModelResult) -> None:
    step, scores = model.step, model.scores
    if step.champion_version is None:
        reason = step.gate_reason or "not trained"
        console.print(f"[red]failure model: no champion[/red] ({reason}); the stream did not score", markup=True)
        return
    m = step.metrics
    how = (
        f"trained on {step.training_window} and {'promoted' if step.promoted else 'NOT promoted'}"
        if step.trained
        else "the champion already in the registry (not retrained)"
    )
    history = f"; simulated history {', '.join(step.history_days)}" if step.history_days else ""
    console.print(
        f"failure model v{step.champion_version}: {how}{history}; test PR-AUC {_figure(m.get('pr_auc'))}, "
        f"F1 {_figure(m.get('f1'))} (engineer's rule {_figure(m.get('baseline_f1'))}), "
        f"median lead {_figure(m.get('median_lead_time_min'), 1)} min"
    )
    versions = ", ".join(f"v{v}" for v in scores.versions) or "-"
    console.print(
        f"the stream scored {scores.scores:,} samples of {scores.machines} machines with {versions} "
        f"({scores.alerts:,} at or above the threshold); MaintenanceRequired raised on factory.alerts: "
        f"{scores.maintenance_raised:,} (in the hot store: {model.hot_store_alerts:,})"
    )
