"""Gold Delta tables: one day partition replaced at a time, atomically.

Every gold table lives at ``lake.table_uri("gold", name)``, partitioned by ``day`` (a date).
A materialisation of day ``D`` writes the whole partition in one Delta commit with
``mode="overwrite", predicate="day = 'D'"`` (delta-rs' replace-where): readers see the old
or the new partition, never a mix, other days are untouched, and because every gold
function sorts its rows, materialising the same day from the same silver again gives an
identical partition.  A write whose rows are not all of day ``D`` is refused before
anything is written (a replace-where never deletes other days, but it must not add any).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from plantstream.orchestration.resources import Lake

PARTITION_COLUMN = "day"


def write_gold_day(lake: Lake, name: str, day: dt.date, rows: pa.Table) -> int:
    """Make ``rows`` the content of ``gold/<name>`` for ``day``; returns the rows written."""
    days = pc.unique(rows[PARTITION_COLUMN]).to_pylist() if rows.num_rows else []
    if days and days != [day]:
        raise ValueError(f"gold/{name}: rows for {days} in a write of {day}; nothing was written")
    write_deltalake(
        lake.table_uri("gold", name),
        rows,
        mode="overwrite",
        predicate=f"{PARTITION_COLUMN} = '{day.isoformat()}'",
        partition_by=[PARTITION_COLUMN],
        storage_options=lake.storage_options,
    )
    return rows.num_rows


def read_gold_days(lake: Lake, name: str, first: dt.date, last: dt.date, columns: list[str] | None = None) -> pa.Table:
    """Rows of ``gold/<name>`` with ``first <= day <= last`` (empty if the table does not exist)."""
    table = lake.table("gold", name)
    if table is None:
        return pa.table({})
    field = pc.field(PARTITION_COLUMN)
    condition = (field >= pa.scalar(first, pa.date32())) & (field <= pa.scalar(last, pa.date32()))
    return table.to_pyarrow_dataset().to_table(columns=columns, filter=condition)


def table_checksum(rows: pa.Table) -> str:
    """A digest of a table's content in its row order (equal tables, equal digests)."""
    digest = hashlib.sha256()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows.combine_chunks() if rows.num_rows else rows)
    digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()[:16]
