"""The columnar shape of decoded telemetry: what the stream's sinks and windows consume
and what the bronze Delta table stores.

One Arrow schema, :data:`BRONZE_TELEMETRY_SCHEMA`, is both the decoded batch and the
bronze table, so the stream writes bronze without any reshaping and the lakehouse
(Dagster's silver asset) can rely on it as the table's contract.  The contract's
timestamps stay epoch milliseconds (as on the wire); ``event_ts`` (source time, else
read time) is added as a real UTC timestamp and ``event_date`` as the partition column.
"""

from __future__ import annotations

import pyarrow as pa

from plantstream.contract import Telemetry

TIMESTAMP_MS_UTC = pa.timestamp("ms", tz="UTC")

# Contract fields, in the order msgspec lays them out (``astuple`` relies on it).
TELEMETRY_FIELDS: tuple[str, ...] = Telemetry.__struct_fields__

_CONTRACT_TYPES: dict[str, pa.DataType] = {
    "signal": pa.string(),
    "value": pa.float64(),
    "unit": pa.string(),
    "quality": pa.string(),
    "v": pa.int16(),
    "site": pa.string(),
    "area": pa.string(),
    "line": pa.string(),
    "machine_id": pa.string(),
    "seq": pa.int64(),
    "source_ts": pa.int64(),
    "read_ts": pa.int64(),
    "ingest_ts": pa.int64(),
}
_NULLABLE = {"value", "source_ts"}

if set(_CONTRACT_TYPES) != set(TELEMETRY_FIELDS):  # pragma: no cover - guards contract drift at import
    raise RuntimeError(f"telemetry_schema is out of date with the contract: {sorted(TELEMETRY_FIELDS)}")

BRONZE_TELEMETRY_SCHEMA: pa.Schema = pa.schema(
    [pa.field(name, _CONTRACT_TYPES[name], nullable=name in _NULLABLE) for name in TELEMETRY_FIELDS]
    + [
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("event_ts", TIMESTAMP_MS_UTC, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
    ]
)
"""Schema of decoded telemetry batches and of the bronze table ``lake.table_uri("bronze", "telemetry")``.

Partitioned by ``event_date``.  Rows are unique by ``(kafka_partition, kafka_offset)``;
``(machine_id, seq)`` identifies an event (a re-sent event has a new offset, same seq).
"""

BRONZE_PARTITION_COLUMNS: tuple[str, ...] = ("event_date",)


def empty_telemetry_table() -> pa.Table:
    return BRONZE_TELEMETRY_SCHEMA.empty_table()
