"""``plantstream topics`` and ``plantstream schemas``: the event contract on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from plantstream.cli.common import emit_json_line, err_console, settings_or_exit

topics_app = typer.Typer(help="The Kafka topic catalogue.", no_args_is_help=True)
schemas_app = typer.Typer(help="The event contract's JSON Schemas.", no_args_is_help=True)


@topics_app.command("create")
def create_topics() -> None:
    """Create every catalogue topic that does not exist yet (idempotent)."""
    from plantstream.connect.topics import ensure_topics
    from plantstream.contract.topics import CATALOGUE, partitions_for, topic_name

    settings = settings_or_exit()
    created = set(ensure_topics(settings))
    table = Table("topic", "partitions", "payload", "status")
    for topic in CATALOGUE:
        payload = topic.payload.__name__ if topic.payload else "original bytes + reason headers"
        name = topic_name(settings, topic)
        table.add_row(name, str(partitions_for(settings, topic)), payload, "created" if name in created else "exists")
    Console().print(table)


@topics_app.command("peek")
def peek_topic(
    topic: Annotated[str, typer.Argument(help="topic name as it is on the broker (with any prefix)")],
    *,
    partition: Annotated[
        list[int] | None, typer.Option("--partition", "-p", help="only this partition (repeatable)")
    ] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="every message of each partition")] = False,
    last: Annotated[
        int | None, typer.Option("--last", min=1, help="the last N messages of each partition (default 10)")
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="then wait for new messages until Ctrl-C")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="one JSON object per message (JSON Lines)")] = False,
) -> None:
    """Print messages of a topic: partition, offset, timestamp, key, headers and value.

    Reads with assign() at explicit offsets and commits nothing, so no consumer group
    moves.  The client to poke at topics by hand: Debian's kcat cannot talk to the local
    broker (docs/platform.md).
    """
    import sys

    from plantstream.cli.topic_peek import PeekError, peek

    if from_beginning and last is not None:
        raise typer.BadParameter("give --from-beginning or --last N, not both")
    settings = settings_or_exit()
    count = 0
    try:
        for message in peek(
            settings,
            topic,
            partitions=partition or None,
            last=None if from_beginning else (last or 10),
            follow=follow,
            on_note=lambda note: err_console.print(note, style="yellow", markup=False),
        ):
            count += 1
            if json_output:
                emit_json_line(message.as_dict())
            else:
                sys.stdout.write(message.line() + "\n")
                sys.stdout.flush()
    except PeekError as exc:
        err_console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass  # the way --follow ends
    err_console.print(f"{count:,} message(s) from {topic}", markup=False, highlight=False)


@schemas_app.command("export")
def export_schemas(
    directory: Annotated[Path, typer.Argument(help="where to write TOPIC.json files")] = Path("docs/schemas"),
) -> None:
    """Write one JSON Schema per topic payload."""
    from plantstream.contract.schemas import export_json_schemas

    for path in export_json_schemas(directory):
        Console().print(f"wrote {path}")
