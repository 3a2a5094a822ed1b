"""``plantstream demo``: the main job on embedded defaults, with progress and a summary."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from plantstream.cli.common import emit_json_line, settings_or_exit

STEPS = {
    "platform": "starting / checking the local platform",
    "live": "live plant -> OPC UA / MQTT / Modbus -> edge gateway -> Kafka (seconds)",
    "produce": "load generator: simulated plant -> Kafka",
    "stream": "draining the plant dataflow (every stream) -> hot store + bronze",
    "lakehouse": "materialising Dagster assets (bronze -> silver, every stream)",
}


class DemoSource(StrEnum):
    edge = "edge"
    direct = "direct"


def demo(
    source: Annotated[
        DemoSource,
        typer.Option(help="edge: live plant over OPC UA/MQTT/Modbus through the gateway; direct: load generator"),
    ] = DemoSource.edge,
    seconds: Annotated[float | None, typer.Option(help="edge: wall seconds the live plant runs")] = None,
    minutes: Annotated[float | None, typer.Option(help="direct: simulated plant time (default from settings)")] = None,
    machines: Annotated[int | None, typer.Option(help="direct: number of machines (default from settings)")] = None,
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

        result = run_demo(settings, on_progress, source=source.value)
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
    verdict = "[green]counts agree[/green]" if result.counts_agree else "[red]COUNTS DISAGREE[/red]"
    console.print(
        f"per stream, {'gateway = ' if result.source == 'edge' else ''}Kafka = hot store = bronze = silver: {verdict}"
    )
    if json_output:
        emit_json_line(result.summary())
    if not result.counts_agree:
        raise typer.Exit(1)
