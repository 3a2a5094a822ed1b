"""The warm tier's copies of the gold tables, one asset per table (group ``warm``).

Gold lives in the lake first (Delta on S3, the system of record); reporting tools and shift
supervisors read the warm tier instead (a DuckDB file locally, PostgreSQL in production,
``docs/warm-tier.md``).  Each ``warm/<table>`` asset copies its run's days of
``gold/<table>`` into the warm table of the same name through the ``WarmTier`` resource:
one transaction per day that replaces the day (``replace_partition``), so a re-run leaves
the same table and a reader never sees half a day.

The warm tier stores flat SQL types: gold's map columns (seconds or counts by reason) are
stored as JSON text (``{"failure:TWF": 2400.0, ...}``; PostgreSQL ``::jsonb`` and DuckDB
``json_extract`` read them).
"""

# No `from __future__ import annotations`: Dagster inspects the context annotation at runtime.
import json

import dagster as dg
import pyarrow as pa

from plantstream.assets.gold.assets import GOLD_TABLES, RETRY, SINGLE_RUN, run_days
from plantstream.assets.gold.calendar import GOLD_PARTITIONS
from plantstream.assets.gold.presentation import preview
from plantstream.assets.gold.tables import read_gold_days
from plantstream.orchestration.resources import Lake
from plantstream.orchestration.warm_io import WarmTier, warm_metadata
from plantstream.quality_checks.gate import refuse_unless_inputs_passed

OWNERS = ["team:data-platform"]


def flat_for_warm(rows: pa.Table) -> pa.Table:
    """``rows`` with map columns as JSON text (the warm tier's types are flat)."""
    columns, fields = [], []
    for field, column in zip(rows.schema, rows.columns, strict=True):
        if pa.types.is_map(field.type):
            text = [None if v is None else json.dumps(dict(v), sort_keys=True) for v in column.to_pylist()]
            columns.append(pa.array(text, pa.string()))
            fields.append(pa.field(field.name, pa.string()))
        else:
            columns.append(column)
            fields.append(field)
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def warm_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_map(f.type) else f for f in schema])


def warm_asset(table: str, schema: pa.Schema) -> dg.AssetsDefinition:
    """``warm/<table>``: the run's days of ``gold/<table>`` copied into the warm tier."""

    @dg.asset(
        key=["warm", table],
        deps=[dg.AssetKey(["gold", table])],
        partitions_def=GOLD_PARTITIONS,
        group_name="warm",
        owners=OWNERS,
        kinds={"duckdb", "postgres"},
        description=f"gold/{table} in the warm reporting tier (table `{table}`, DuckDB file locally, PostgreSQL in "
        "production), one transaction per day replacing the day; map columns as JSON text.",
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(f.name, str(f.type)) for f in warm_schema(schema)]
            ),
            "warm_table": table,
        },
        retry_policy=RETRY,
        backfill_policy=SINGLE_RUN,
    )
    def _warm(
        context: dg.AssetExecutionContext, lake: dg.ResourceParam[Lake], warm: dg.ResourceParam[WarmTier]
    ) -> dg.MaterializeResult:
        refuse_unless_inputs_passed(context)  # a failed blocking check of the gold days: nothing published
        days = run_days(context)
        rows = read_gold_days(lake, table, min(days), max(days))
        if not rows.num_columns:
            raise dg.Failure(f"gold/{table} does not exist yet: materialise it for {days[0]} first")
        flat = flat_for_warm(rows.select(schema.names))
        writes = warm.publish(context, table, flat, partition_column="day")
        return dg.MaterializeResult(
            metadata={
                **warm_metadata(writes),
                "dagster/row_count": dg.MetadataValue.int(flat.num_rows),
                "warm_store": dg.MetadataValue.text(warm.store.describe()),
                "preview": preview(flat, schema.names[:8], limit=5),
            }
        )

    return _warm


WARM_ASSETS = [warm_asset(table, schema) for table, schema in GOLD_TABLES.items()]


def defs() -> dg.Definitions:
    return dg.Definitions(assets=WARM_ASSETS)
