"""``plantstream simulate serve``: serve the simulated plant over OPC UA, MQTT and Modbus TCP.

``plantstream simulate kafka`` produces straight to Kafka (load tests, the skeleton);
this command is the realistic path: the plant runs as OPC UA servers, MQTT publishers and Modbus devices
(as its plant file assigns them) for the edge gateway to collect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from plantstream.cli.common import emit_json_line, settings_or_exit


def simulate_serve(
    plant: Annotated[
        Path | None,
        typer.Option("--plant", help="plant YAML (default: the shipped plant)", exists=True, dir_okay=False),
    ] = None,
    speed: Annotated[float, typer.Option(help="simulated seconds per wall second", min=0.01)] = 1.0,
    minutes: Annotated[float | None, typer.Option(help="stop after this much simulated time (default: Ctrl-C)")] = None,
    no_faults: Annotated[bool, typer.Option("--no-faults", help="inject no random faults")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line")] = False,
) -> None:
    """Serve a simulated plant over its configured protocols until Ctrl-C (or --minutes)."""
    import asyncio
    import time

    from plantstream.simulator.plant_config import FaultConfig, PlantConfigError, load_plant
    from plantstream.simulator.serve import serve_plant

    settings = settings_or_exit()
    console = Console(stderr=json_output)
    try:
        config = load_plant(plant)
    except PlantConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if no_faults:
        config = config.with_faults(FaultConfig(scheduled=config.faults.scheduled))
    out_dir = settings.state_dir / "simulator" / f"serve-{config.name}"
    for ep in config.machine_endpoints():
        console.print(f"{ep.machine.machine_id:>16}  {ep.machine.protocol:<7} {ep.url}")
    console.print(f"ground truth: {out_dir / 'ground_truth.jsonl'}; speed x{speed}; Ctrl-C stops")
    # With --minutes the run ends at about "now" in simulated time, like `plantstream simulate`.
    start_ms = int(time.time() * 1000 - minutes * 60_000) if minutes is not None and speed > 1 else None
    try:
        report = asyncio.run(serve_plant(config, out_dir, speed=speed, minutes=minutes, start_ms=start_ms))
    except KeyboardInterrupt:
        console.print("stopped")
        return
    console.print(f"served {report.steps} steps ({report.simulated_s:.0f} s simulated) in {report.wall_s:.1f} s")
    if json_output:
        emit_json_line({"steps": report.steps, "simulated_s": report.simulated_s, "wall_s": round(report.wall_s, 3)})
