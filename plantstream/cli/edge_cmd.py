"""``plantstream gateway`` and ``plantstream gaps``: run the edge gateway, account for its sequence numbers.

The lead registers both in ``plantstream/cli/main.py``:
``app.command("gateway")(gateway)`` and ``app.command("gaps")(gaps)``.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from plantstream.cli.common import emit_json_line, err_console, settings_or_exit


def gateway(
    config: Annotated[
        Path | None, typer.Option("--config", help="gateway YAML (default PLANTSTREAM_EDGE__CONFIG_FILE)")
    ] = None,
) -> None:
    """Run the edge gateway (OPC UA / MQTT / Modbus -> durable buffer -> Kafka) until Ctrl-C or SIGTERM."""
    import logging

    from plantstream.edge.config import GatewayConfigError, load_config
    from plantstream.edge.gateway import config_path, run_gateway

    settings = settings_or_exit()
    path = config or config_path(settings)
    try:
        gateway_config = load_config(path)
    except GatewayConfigError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_gateway(settings, gateway_config)


class GapsAgainst(StrEnum):
    kafka = "kafka"
    silver = "silver"


def gaps(
    json_output: Annotated[bool, typer.Option("--json", help="end with one JSON line of the report")] = False,
    against: Annotated[
        GapsAgainst, typer.Option(help="kafka: what the topics hold; silver: what the lakehouse holds (end to end)")
    ] = GapsAgainst.kafka,
) -> None:
    """Per machine and stream: the sequence numbers the gateway produced vs. what Kafka (or silver) holds."""
    from plantstream.edge.gaps import gap_report
    from plantstream.edge.gateway import BUFFER_FILE, edge_dir

    settings = settings_or_exit()
    try:
        report = gap_report(settings, buffer_path=edge_dir(settings) / BUFFER_FILE, against=against.value)
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console = Console(stderr=json_output)
    table = Table(
        "machine",
        "stream",
        "produced",
        f"in {report.against}",
        "buffered",
        "missing",
        "missing ranges",
        "duplicates",
        "overflow",
    )
    for (machine, stream), m in sorted(report.entries.items()):
        ranges = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in m.missing_ranges[:5])
        if len(m.missing_ranges) > 5:
            ranges += f", ... ({len(m.missing_ranges)} ranges)"
        table.add_row(
            machine,
            stream,
            f"{m.produced:,}",
            f"{m.in_kafka:,}",
            f"{m.pending:,}",
            f"[red]{m.missing:,}[/red]" if m.missing else "0",
            ranges,
            str(m.duplicates),
            str(m.dropped_by_overflow),
        )
    console.print(table)
    for stream, topic in report.topics.items():
        console.print(f"{stream} ({topic}): {report.missing_in(stream):,} missing")
    console.print(
        f"all streams, against {report.against}: {report.missing:,} missing, {report.duplicates:,} duplicates"
    )
    for incident in report.incidents:
        console.print(f"[red]incident[/red] {incident}")
    if json_output:
        emit_json_line(report.as_dict())
    if report.missing:
        raise typer.Exit(1)
