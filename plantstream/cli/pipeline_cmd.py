"""``plantstream simulate kafka`` and ``plantstream stream``: run one stage of the pipeline."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from plantstream.cli.common import emit_json_line, settings_or_exit


def simulate_kafka(
    minutes: Annotated[float | None, typer.Option(help="simulated plant time (default from settings)")] = None,
    machines: Annotated[int | None, typer.Option(help="number of machines (default from settings)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """Simulate the plant as fast as possible and produce its telemetry straight to Kafka (no edge)."""
    from plantstream.contract.topics import ensure_topics
    from plantstream.simulator.kafka_producer import produce_simulated_telemetry

    settings = settings_or_exit()
    simulator = settings.simulator.model_copy(
        update={k: v for k, v in {"simulated_minutes": minutes, "machines": machines}.items() if v is not None}
    )
    settings = settings.model_copy(update={"simulator": simulator})
    ensure_topics(settings)
    console = Console(stderr=json_output)
    with Progress(
        *Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("plant -> Kafka", total=None)
        report = produce_simulated_telemetry(settings, on_progress=lambda d, t: bar.update(task, completed=d, total=t))
    console.print(f"produced {report.events:,} events from {report.machines} machines in {report.seconds:.1f} s")
    if json_output:
        emit_json_line({"events": report.events, "machines": report.machines, "seconds": round(report.seconds, 3)})


def stream(
    until_drained: Annotated[
        bool, typer.Option("--until-drained", help="stop once every partition is read to its end")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line of counts")] = False,
) -> None:
    """Run the telemetry dataflow (Kafka -> windows -> hot store + bronze), resuming from its recovery state."""
    from dataclasses import asdict

    from plantstream.streaming.hot_tables import ensure_hot_tables
    from plantstream.streaming.runner import run_telemetry_flow

    settings = settings_or_exit()
    ensure_hot_tables(settings)
    console = Console(stderr=json_output)
    with console.status("telemetry dataflow running (Ctrl-C stops; it resumes where it stopped)"):
        stats = run_telemetry_flow(settings, stop_at_end=until_drained)
    console.print(stats)
    if json_output:
        emit_json_line(asdict(stats))
