"""``plantstream sql``: SQL over the lake's tables by name, or ClickHouse SQL on the hot store.

``plantstream sql "SELECT line, avg(oee) FROM gold.oee WHERE shift = 'day' GROUP BY line"``
runs DuckDB over ``bronze.*``, ``silver.*``, ``gold.*`` and ``warm.*``
(:mod:`plantstream.connect.lake_sql`); ``--hot`` sends the query to the hot store as it is.
Output: a table on the terminal (``--format table``, the first ``--limit`` rows), or every
row as CSV or a JSON array on stdout for scripts.  ``--list`` prints the tables;
``--init-script FILE [--mirror DIR]`` writes a catalogue for the plain ``duckdb`` shell.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from plantstream.cli.common import err_console, settings_or_exit


class OutputFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list) and value and isinstance(value[0], tuple):  # a map column
        return {k: _json_value(v) for k, v in value}
    if isinstance(value, bytes):
        return value.hex()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(_json_value(value))


def print_result(table, output: OutputFormat, limit: int, seconds: float) -> None:  # table: pyarrow.Table
    if output is OutputFormat.CSV:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        # CSV has no maps, lists or structs: such columns are written as JSON text.
        for index, field in enumerate(table.schema):
            if pa.types.is_nested(field.type):
                text = [None if v is None else json.dumps(_json_value(v)) for v in table.column(index).to_pylist()]
                table = table.set_column(index, field.name, pa.array(text, pa.string()))
        sink = sys.stdout.buffer
        pa_csv.write_csv(table, sink)
        sink.flush()
        return
    if output is OutputFormat.JSON:
        rows = [{k: _json_value(v) for k, v in row.items()} for row in table.to_pylist()]
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    shown = Table(*table.column_names, show_lines=False)
    for row in table.slice(0, limit).to_pylist():
        shown.add_row(*(_cell(v) for v in row.values()))
    console = Console()
    console.print(shown)
    more = f" (first {limit} shown; --limit N or --format csv for all)" if table.num_rows > limit else ""
    console.print(f"{table.num_rows:,} rows in {seconds * 1000:.0f} ms{more}", style="dim")


def sql(  # noqa: PLR0917 - typer: one parameter per option
    query: Annotated[str | None, typer.Argument(help="one SQL query (DuckDB; ClickHouse with --hot)")] = None,
    hot: Annotated[
        bool, typer.Option("--hot", help="run on the hot store (ClickHouse SQL) instead of the lake")
    ] = False,
    output: Annotated[OutputFormat, typer.Option("--format", help="table, csv or json")] = OutputFormat.TABLE,
    limit: Annotated[int, typer.Option(help="rows shown by --format table")] = 100,
    list_tables: Annotated[bool, typer.Option("--list", help="print the tables that can be queried")] = False,
    init_script: Annotated[
        Path | None, typer.Option("--init-script", help="write a catalogue for the duckdb shell (duckdb -init FILE)")
    ] = None,
    mirror: Annotated[
        Path | None, typer.Option(help="with --init-script: copy the current Parquet files here and read the copies")
    ] = None,
    tiers: Annotated[str, typer.Option(help="with --init-script: the tiers to include")] = "bronze,silver,gold,warm",
) -> None:
    """SQL over the lake (bronze.*, silver.*, gold.*, warm.*) by table name, or on the hot store (--hot)."""
    from plantstream.connect.lake_sql import LakeSql, LakeSqlError, hot_query
    from plantstream.connect.lake_sql import init_script as write_init_script

    settings = settings_or_exit()
    if list_tables:
        for name in LakeSql(settings).catalogue():
            typer.echo(name)
        return
    if init_script is not None:
        wanted = [t.strip() for t in tiers.split(",") if t.strip()]
        path = write_init_script(settings, init_script, mirror=mirror, tiers=wanted)
        err_console.print(f"wrote {path}: duckdb -init {path}", markup=False, highlight=False)
        return
    if not query:
        raise typer.BadParameter("give a query, or --list / --init-script")
    try:
        result = hot_query(settings, query) if hot else LakeSql(settings).query(query)
    except LakeSqlError as exc:
        err_console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as exc:
        if hot and type(exc).__module__.startswith("clickhouse_connect"):
            err_console.print(str(exc), style="red", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        raise
    print_result(result.table, output, limit, result.seconds)
