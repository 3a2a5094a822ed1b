"""``plantstream bench NAME``: the one entry point for every benchmark."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer
from rich.console import Console

from plantstream.cli.common import emit_json_line, settings_or_exit

# name -> "module:function"; each function is run(settings, console, quick) -> dict of figures.
# A benchmark whose figures carry a non-empty "failed_steps" reported what it could and
# marked what it could not: the JSON line still appears, and the exit code is 1.
BENCHMARKS: dict[str, str] = {
    "hotstore": "plantstream.benchmarks.hotstore:run",
    "stream": "plantstream.benchmarks.stream:run",
    "gateway": "plantstream.benchmarks.gateway:run",
    "state": "plantstream.benchmarks.state:run",
    "lakehouse": "plantstream.benchmarks.lakehouse:run",
    "cold": "plantstream.benchmarks.cold_tier:run",
    "latency": "plantstream.benchmarks.latency:run",
    "broker": "plantstream.benchmarks.broker_loss:run",
    "quality": "plantstream.benchmarks.quality:run",
}


def bench(
    name: Annotated[str, typer.Argument(help=f"one of: {', '.join(BENCHMARKS)}")],
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line of the figures")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="smaller data, for a smoke run")] = False,
) -> None:
    """Run a benchmark: prints a table, writes benchmarks/results/NAME.json.  Exit 1 if a step failed."""
    if name not in BENCHMARKS:
        raise typer.BadParameter(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    settings = settings_or_exit()
    module_name, func_name = BENCHMARKS[name].split(":")
    run = getattr(importlib.import_module(module_name), func_name)
    figures = run(settings, Console(stderr=json_output), quick)
    if json_output:
        emit_json_line(figures)
    if figures.get("failed_steps"):
        raise typer.Exit(1)
