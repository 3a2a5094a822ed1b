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
    """Simulate the plant as fast as possible and produce every stream straight to Kafka (no edge).

    Success means every event is in Kafka (read back, not only acknowledged); a broker or
    storage outage is waited out up to PLANTSTREAM_SIMULATOR__PRODUCE_TIMEOUT_S, then the
    command fails (exit 1) and the next run finishes this one without duplicates.
    """
    from plantstream.simulator.kafka_producer import DeliveryError, produce_simulated_plant

    settings = settings_or_exit()
    simulator = settings.simulator.model_copy(
        update={k: v for k, v in {"simulated_minutes": minutes, "machines": machines}.items() if v is not None}
    )
    settings = settings.model_copy(update={"simulator": simulator})
    console = Console(stderr=json_output)
    with Progress(
        *Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("plant -> Kafka", total=None)
        try:
            report = produce_simulated_plant(settings, on_progress=lambda d, t: bar.update(task, completed=d, total=t))
        except DeliveryError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    streams = ", ".join(f"{name} {count:,}" for name, count in report.by_stream.items())
    console.print(
        f"produced {report.events:,} events ({streams}) from {report.machines} machines in {report.seconds:.1f} s"
        + (f"; {report.resent:,} resent after Kafka did not hold them" if report.resent else "")
    )
    if json_output:
        emit_json_line(
            {
                "events": report.events,
                "by_stream": report.by_stream,
                "machines": report.machines,
                "resent": report.resent,
                "seconds": round(report.seconds, 3),
            }
        )


def stream(
    until_drained: Annotated[
        bool, typer.Option("--until-drained", help="stop once every partition is read to its end")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line of counts")] = False,
) -> None:
    """Run the plant dataflow (every stream -> hot store + bronze; telemetry windows), resuming where it stopped.

    Ctrl-C (or SIGTERM) finishes the current epoch and stops (exit 130; a second Ctrl-C stops
    at once).  A sink whose service stays away longer than PLANTSTREAM_STREAM__SINK_RETRY_SECONDS
    stops the flow with one line and exit 75; a restart resumes from the last snapshot.
    """
    from plantstream.streaming.runner import run_flow, stopped_by_request
    from plantstream.streaming.stopping import EXIT_STOPPED

    settings = settings_or_exit()
    console = Console(stderr=json_output)
    with console.status("plant dataflow running (Ctrl-C stops; it resumes where it stopped)"):
        stats = run_flow(settings, stop_at_end=until_drained)
    stopped = stopped_by_request()
    if stopped:
        console.print("stopped on request after the last epoch; `plantstream stream` resumes from there")
    console.print(stats.as_dict())
    if json_output:
        # as_dict(): per-stream counts, flow counts and totals, JSON-ready.
        emit_json_line({**stats.as_dict(), "stopped": stopped})
    if stopped:
        raise typer.Exit(EXIT_STOPPED)
