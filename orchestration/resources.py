"""Dagster resources, built from the one settings model.

Resources are plain objects handed to assets as ``dg.ResourceParam[...]``: they carry
no Dagster config of their own (so no secret ever appears in the UI's config view)
and reach each service through ``plantstream.connect``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from plantstream.connect.hotstore import hotstore_client
from plantstream.connect.s3 import delta_storage_options
from plantstream.orchestration.warm_io import WarmTier
from plantstream.settings import Settings


@dataclass(frozen=True)
class Lake:
    """The Delta Lake on S3: bronze (written by the stream), silver, gold."""

    settings: Settings

    def table_uri(self, tier: str, name: str) -> str:
        return self.settings.lake.table_uri(tier, name)

    @property
    def storage_options(self) -> dict[str, str]:
        return delta_storage_options(self.settings)

    def table(self, tier: str, name: str, version: int | None = None) -> DeltaTable | None:
        """The Delta table, or ``None`` if nothing was written to it yet."""
        try:
            return DeltaTable(self.table_uri(tier, name), version=version, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def days(self, tier: str, name: str) -> list[dt.date]:
        """The ``event_date`` partitions the table holds rows for, oldest first (from the
        Delta log: no data file is read); none for a table not written yet."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self.table(tier, name)
        if table is None:
            return []
        actions = pa.table(table.get_add_actions(flatten=True))
        if not actions.num_rows:
            return []
        values = pc.unique(actions["partition.event_date"]).to_pylist()
        return sorted(v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)) for v in values if v is not None)

    def row_count(self, tier: str, name: str) -> int:
        table = self.table(tier, name)
        return 0 if table is None else table.to_pyarrow_dataset().count_rows()


@dataclass(frozen=True)
class HotStore:
    """The hot tier (ClickHouse, or the chDB-backed local service) via clickhouse-connect."""

    settings: Settings

    def client(self):  # -> clickhouse_connect Client; one per use, they are not thread-safe
        return hotstore_client(self.settings)

    def scalar(self, sql: str, parameters: dict | None = None) -> object:
        client = self.client()
        try:
            return client.query(sql, parameters=parameters).first_row[0]
        finally:
            client.close()

    def rows(self, sql: str, parameters: dict | None = None) -> list[tuple]:
        client = self.client()
        try:
            return [tuple(row) for row in client.query(sql, parameters=parameters).result_rows]
        finally:
            client.close()


def build_resources(settings: Settings) -> dict[str, object]:
    return {"settings": settings, "lake": Lake(settings), "hotstore": HotStore(settings), "warm": WarmTier(settings)}
