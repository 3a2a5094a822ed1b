"""The ``plantstream`` command."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="plantstream",
    help="PlantStream: industrial streaming lakehouse (plant -> edge -> Kafka -> stream -> lake).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    from rich.console import Console
    from rich.table import Table

    from plantstream.cli.common import settings_or_exit

    settings = settings_or_exit()
    table = Table("environment variable", "value")
    for name, value in settings.redacted().items():
        table.add_row(name, str(value))
    Console().print(table)


from plantstream.cli.bench_cmd import bench  # noqa: E402
from plantstream.cli.contract_cmd import schemas_app, topics_app  # noqa: E402

app.command("bench")(bench)
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")


def main() -> None:
    app()
