"""The columnar form of every stream, derived from its contract type.

What crosses Kafka is JSON (:mod:`.events`); what the stream's sinks, the bronze and
silver Delta tables and the hot store hold are columns.  Both come from one
definition: the Arrow schema of a stream is *derived* from its msgspec contract
struct here, so a field added to the contract reaches every store without anyone
writing its column down again.

Bronze rows (:func:`bronze_schema`) are the contract's fields as they are on the wire
(timestamps stay epoch milliseconds) plus where the row came from (``kafka_partition``,
``kafka_offset``), its event time as a real UTC timestamp (``event_ts``: the source time,
else the read time) and the partition column ``event_date``.  Rows are unique by
``(kafka_partition, kafka_offset)``; ``(machine_id, seq)`` identifies an event (a re-sent
event has a new offset and the same seq).
"""

from __future__ import annotations

import functools

import msgspec
import pyarrow as pa

from plantstream.contract.events import _Event
from plantstream.contract.streams import StreamSpec

TIMESTAMP_MS_UTC = pa.timestamp("ms", tz="UTC")

#: Envelope fields that hold epoch milliseconds (typed stores turn them into timestamps).
MILLIS_FIELDS: tuple[str, ...] = ("source_ts", "read_ts", "ingest_ts")
#: Columns bronze adds to the contract's fields.
SOURCE_COLUMNS: tuple[pa.Field, ...] = (
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
    pa.field("event_ts", TIMESTAMP_MS_UTC, nullable=False),
    pa.field("event_date", pa.date32(), nullable=False),
)
BRONZE_PARTITION_COLUMNS: tuple[str, ...] = ("event_date",)

# The schema version is small; every other integer of the contract is 64-bit.
_NARROW_INTEGERS = {"v": pa.int16()}


def _arrow_type(name: str, info: msgspec.inspect.Type) -> tuple[pa.DataType, bool]:
    """Arrow type and nullability of one contract field."""
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.UnionType):
        kinds = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(kinds) != 1:
            raise TypeError(f"contract field {name}: unions other than `X | None` have no column type")
        return _arrow_type(name, kinds[0])[0], True
    if isinstance(info, msgspec.inspect.IntType):
        return _NARROW_INTEGERS.get(name, pa.int64()), False
    if isinstance(info, msgspec.inspect.FloatType):
        return pa.float64(), False
    if isinstance(info, msgspec.inspect.BoolType):
        return pa.bool_(), False
    if isinstance(info, (msgspec.inspect.StrType, msgspec.inspect.EnumType)):
        return pa.string(), False
    if isinstance(info, msgspec.inspect.DictType):
        key, _ = _arrow_type(name, info.key_type)
        value, _ = _arrow_type(name, info.value_type)
        return pa.map_(key, value), False
    raise TypeError(f"contract field {name}: no column type for {info!r}")


@functools.cache
def contract_schema(payload: type[_Event]) -> pa.Schema:
    """The contract's fields as Arrow columns, in the struct's field order."""
    info = msgspec.inspect.type_info(payload)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = []
    for field in info.fields:
        arrow, nullable = _arrow_type(field.name, field.type)
        fields.append(pa.field(field.name, arrow, nullable=nullable))
    return pa.schema(fields)


def bronze_schema(spec: StreamSpec) -> pa.Schema:
    """Decoded batches of ``spec`` and its bronze Delta table: contract fields + source columns."""
    return _bronze_schema(spec.payload)


@functools.cache
def _bronze_schema(payload: type[_Event]) -> pa.Schema:
    return pa.schema([*contract_schema(payload), *SOURCE_COLUMNS])
