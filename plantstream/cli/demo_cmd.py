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
    "stream": "draining the telemetry dataflow -> hot store + bronze",
    "lakehouse": "materialising Dagster assets (bronze -> silver)",
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
    from plantstream.demo import run_demo

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

    table = Table("", "this run", "total", title=f"PlantStream demo: {result.machines} machines")
    produced_by = "the edge gateway" if result.source == "edge" else "the load generator"
    table.add_row(f"events produced to Kafka by {produced_by}", f"{result.events_produced:,}", "")
    for protocol, count in result.events_by_protocol.items():
        table.add_row(f"  from {protocol}", f"{count:,}", "")
    if result.source == "edge":
        table.add_row("missing sequence numbers (plantstream gaps)", f"{result.gaps_missing:,}", "")
    table.add_row("events consumed by the dataflow", f"{result.kafka_events_consumed:,}", "")
    table.add_row("dead letters", f"{result.dead_letters:,}", "")
    table.add_row("late events (kept on the late topic)", f"{result.late_events:,}", "")
    table.add_row("hot store rows (telemetry_raw FINAL)", f"{result.hot_rows:,}", f"{result.totals.hot_rows:,}")
    table.add_row("hot store window aggregates", f"{result.hot_windows:,}", f"{result.totals.hot_windows:,}")
    table.add_row("bronze Delta rows", f"{result.bronze_rows:,}", f"{result.totals.bronze_rows:,}")
    table.add_row("silver Delta rows", f"{result.silver_rows:,}", f"{result.totals.silver_rows:,}")
    table.add_row("platform start", f"{result.platform_start_s:.1f} s", "")
    table.add_row("wall time", f"{result.wall_s:.1f} s", "")
    console.print(table)
    verdict = "[green]counts agree[/green]" if result.counts_agree else "[red]COUNTS DISAGREE[/red]"
    console.print(f"{'gateway = ' if result.source == 'edge' else ''}Kafka = hot store = bronze = silver: {verdict}")
    if json_output:
        emit_json_line(result.summary())
    if not result.counts_agree:
        raise typer.Exit(1)
