"""The ``plantstream`` command.

Sub-command modules import only typer and rich at module level; heavy libraries are
imported inside the commands so ``plantstream --help`` stays instant.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from plantstream.cli.alerts_cmd import alerts_app
from plantstream.cli.bench_cmd import bench
from plantstream.cli.common import settings_or_exit
from plantstream.cli.contract_cmd import schemas_app, topics_app
from plantstream.cli.demo_cmd import demo
from plantstream.cli.edge_cmd import gaps, gateway
from plantstream.cli.model_cmd import model_app, simulate_history, train
from plantstream.cli.pipeline_cmd import simulate_kafka, stream
from plantstream.cli.platform_cmd import platform_app
from plantstream.cli.simulate_cmd import simulate_serve
from plantstream.cli.sql_cmd import sql

app = typer.Typer(
    name="plantstream",
    help="PlantStream: industrial streaming lakehouse (plant -> edge -> Kafka -> stream -> lake).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("demo")(demo)
app.command("bench")(bench)
app.command("stream")(stream)
app.command("gateway")(gateway)
app.command("gaps")(gaps)
app.command("sql")(sql)
app.command("train")(train)

simulate_app = typer.Typer(help="The simulated plant.", no_args_is_help=True)
simulate_app.command("serve")(simulate_serve)
simulate_app.command("kafka")(simulate_kafka)
simulate_app.command("history")(simulate_history)
app.add_typer(simulate_app, name="simulate")
app.add_typer(platform_app, name="platform")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
app.add_typer(alerts_app, name="alerts")
app.add_typer(model_app, name="model")


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    settings = settings_or_exit()
    table = Table("environment variable", "value")
    for name, value in settings.redacted().items():
        table.add_row(name, str(value))
    Console().print(table)
