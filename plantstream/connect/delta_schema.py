"""Existing Delta tables follow the contract: columns it gained are added to them.

A field added to a contract type reaches every store's schema by derivation
(:mod:`plantstream.contract.columns`), but a bronze or silver table written by an earlier
release keeps its old schema, and appending rows with the new column to it fails.  Before
writing, the writers give such a table the missing columns (a metadata-only commit; the
old files read the column as null).  Only nullable columns can be added this way: a new
field must have a default, which is also what keeps old messages valid.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from deltalake import DeltaTable

log = logging.getLogger(__name__)


def add_missing_columns(table: DeltaTable, schema: pa.Schema) -> list[str]:
    """Add the fields of ``schema`` that ``table`` lacks; returns their names (empty: none)."""
    from deltalake.schema import Field

    have = set(table.schema().to_arrow().names)
    missing = [field for field in schema if field.name not in have]
    if not missing:
        return []
    required = [f.name for f in missing if not f.nullable]
    if required:
        raise ValueError(f"{table.table_uri}: cannot add non-nullable columns {required} to existing rows")
    try:
        table.alter.add_columns([Field.from_arrow(field) for field in missing])
    except Exception:
        table.update_incremental()  # another writer may have added them first: fine if so
        if {f.name for f in missing} - set(table.schema().to_arrow().names):
            raise
    names = [f.name for f in missing]
    log.warning("Delta table %s: added columns %s (the contract gained them)", table.table_uri, names)
    return names


__all__ = ["add_missing_columns"]
