"""The warm tier as a Dagster resource: gold partitions copied into the reporting store.

Like ``Lake`` and ``HotStore`` (``orchestration/resources.py``) this is a plain object built
from the settings and handed to assets as ``warm: dg.ResourceParam[WarmTier]``: no Dagster
config of its own, so the PostgreSQL DSN (a secret) never shows in the UI.  A resource
rather than an I/O manager because gold tables live in the lake first; copying a
partition to the warm tier is a second, explicit write the asset makes (and reports).

Partition keys are days (``"2026-01-02"``, Dagster's ``DailyPartitionsDefinition``); a
single-run backfill hands one run a range of keys, and :meth:`WarmTier.publish` then
replaces every day of the range, each in its own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from plantstream.connect.warm import PartitionWrite, WarmSchemaError, WarmStore, normalise, warm_store
from plantstream.settings import Settings


@dataclass(frozen=True)
class WarmTier:
    """The operational reporting store (DuckDB file locally, PostgreSQL in production)."""

    settings: Settings

    @property
    def store(self) -> WarmStore:
        return warm_store(self.settings)

    def publish(
        self,
        context: dg.AssetExecutionContext,
        table: str,
        data: pa.Table,
        *,
        partition_column: str = "day",
        primary_key: Sequence[str] | None = None,
    ) -> list[PartitionWrite]:
        """Make ``data`` the content of the run's partitions of ``table`` (one key or a range).

        Every key of the run is replaced, also those ``data`` has no rows for (they are
        emptied: the gold partition is empty too).  Rows for a day outside the run's keys
        are refused before anything is written.
        """
        return self.publish_partitions(
            table, data, context.partition_keys, partition_column=partition_column, primary_key=primary_key
        )

    def publish_partitions(
        self,
        table: str,
        data: pa.Table,
        partition_keys: Sequence[str],
        *,
        partition_column: str = "day",
        primary_key: Sequence[str] | None = None,
    ) -> list[PartitionWrite]:
        """:meth:`publish` without a Dagster context (sensors, scripts, tests)."""
        if not partition_keys:
            raise ValueError(f"publishing {table!r} needs at least one partition key (is the asset partitioned?)")
        if partition_column not in data.column_names:
            raise WarmSchemaError(f"table {table!r}: the partition column {partition_column!r} is not in the data")
        normalised = normalise(data)
        column = normalised[partition_column]
        part_type = normalised.schema.field(partition_column).type
        days = pa.array([pa.scalar(key).cast(part_type) for key in partition_keys], type=part_type)
        outside = normalised.filter(pc.invert(pc.fill_null(pc.is_in(column, value_set=days), False)))
        if outside.num_rows:
            stray = pc.unique(outside[partition_column]).to_pylist()
            raise WarmSchemaError(
                f"table {table!r}: {outside.num_rows} rows are for {partition_column} values outside the run's"
                f" partitions {list(partition_keys)[:5]}: {stray[:5]}; nothing was written"
            )
        slices = [
            (key, normalised.filter(pc.fill_null(pc.equal(column, day), False)))
            for key, day in zip(partition_keys, days, strict=True)
        ]
        store = self.store
        return [
            store.replace_partition(table, partition_column, key, rows, primary_key=primary_key) for key, rows in slices
        ]


def warm_metadata(writes: Sequence[PartitionWrite]) -> dict[str, dg.MetadataValue]:
    """What a publishing asset reports in its ``MaterializeResult`` (no secrets)."""
    return {
        "warm_table": dg.MetadataValue.text(writes[0].table if writes else ""),
        "warm_backend": dg.MetadataValue.text(writes[0].backend if writes else ""),
        "warm_partitions": dg.MetadataValue.int(len(writes)),
        "warm_rows_written": dg.MetadataValue.int(sum(w.rows_written for w in writes)),
        "warm_rows_replaced": dg.MetadataValue.int(sum(w.rows_deleted for w in writes)),
        "warm_lock_wait_s": dg.MetadataValue.float(round(sum(w.lock_wait_s for w in writes), 3)),
    }
