"""``plantstream alerts``: the stream's alerts, judged.

``score`` runs the anomaly branch on a simulated faulty plant and scores its alerts
against the simulator's ground truth (``plantstream.benchmarks.alerts_score``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from plantstream.cli.common import emit_json_line, settings_or_exit

alerts_app = typer.Typer(help="The stream's alerts (docs/alerts.md).", no_args_is_help=True)


@alerts_app.command("score")
def score(
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line of the figures")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="a small plant (12 machines, 1 h), for a smoke run")] = False,
    machines: Annotated[int | None, typer.Option(help="machines of the simulated plant (default 50)")] = None,
    hours: Annotated[float | None, typer.Option(help="simulated hours (default 3)")] = None,
    seed: Annotated[int | None, typer.Option(help="simulator seed (default 11)")] = None,
) -> None:
    """Score the stream's alerts: precision, recall, time to detect, lead before failures, vs. fixed limits.

    Prints a table and writes benchmarks/results/alerts_score.json (alerts_score-quick.json
    when not at the default size).
    """
    from plantstream.benchmarks.alerts_score import run

    if machines is not None and machines < 1:
        raise typer.BadParameter("--machines must be at least 1")
    if hours is not None and hours <= 0.25:
        raise typer.BadParameter("--hours must exceed 0.25 (the first 15 minutes are the detectors' warm-up)")
    settings = settings_or_exit()
    figures = run(settings, Console(stderr=json_output), quick, machines=machines, hours=hours, seed=seed)
    if json_output:
        emit_json_line(figures)
