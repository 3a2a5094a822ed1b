"""``plantstream topics`` and ``plantstream schemas``: the event contract on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from plantstream.cli.common import settings_or_exit

topics_app = typer.Typer(help="The Kafka topic catalogue.", no_args_is_help=True)
schemas_app = typer.Typer(help="The event contract's JSON Schemas.", no_args_is_help=True)


@topics_app.command("create")
def create_topics() -> None:
    """Create every catalogue topic that does not exist yet (idempotent)."""
    from plantstream.contract.topics import CATALOGUE, ensure_topics, partitions_for

    settings = settings_or_exit()
    created = set(ensure_topics(settings))
    table = Table("topic", "partitions", "payload", "status")
    for topic in CATALOGUE:
        payload = topic.payload.__name__ if topic.payload else "original bytes + reason headers"
        table.add_row(
            topic.name, str(partitions_for(settings, topic)), payload, "created" if topic.name in created else "exists"
        )
    Console().print(table)


@schemas_app.command("export")
def export_schemas(
    directory: Annotated[Path, typer.Argument(help="where to write TOPIC.json files")] = Path("docs/schemas"),
) -> None:
    """Write one JSON Schema per topic payload."""
    from plantstream.contract.schemas import export_json_schemas

    for path in export_json_schemas(directory):
        Console().print(f"wrote {path}")
