"""Ways factory data goes bad, applied to a lake's bronze tables the way the plant would send them.

Each function changes ``bronze/<stream>`` of a test lake in place (delta-rs update, delete or
append): what silver then makes of it is the real pipeline's business.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from plantstream.connect.s3 import delta_storage_options
from plantstream.contract.columns import BRONZE_PARTITION_COLUMNS
from plantstream.settings import Settings


def _table(settings: Settings, stream: str) -> DeltaTable:
    return DeltaTable(settings.lake.table_uri("bronze", stream), storage_options=delta_storage_options(settings))


def _ms(day: dt.date, hour: float) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000 + hour * 3_600_000)


def _iso(day: dt.date, hour: float) -> str:
    return dt.datetime.fromtimestamp(_ms(day, hour) / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _window(machine: str, day: dt.date, start_h: float, end_h: float) -> str:
    return (
        f"machine_id = '{machine}' AND event_date = '{day.isoformat()}' "
        f"AND event_ts >= '{_iso(day, start_h)}' AND event_ts < '{_iso(day, end_h)}'"
    )


def _at(day: dt.date, hour: float) -> pa.Scalar:
    return pa.scalar(_ms(day, hour) * 1000, pa.timestamp("us", "UTC"))


def unit_change(settings: Settings, machine: str, signal: str, day: dt.date, from_hour: float, factor: float) -> None:
    """A PLC update scales ``signal`` by ``factor`` from ``from_hour`` on (same unit label)."""
    _table(settings, "telemetry").update(
        predicate=f"{_window(machine, day, from_hour, 24)} AND signal = '{signal}'",
        updates={"value": f"value * {factor}"},
    )


def stuck_sensor(settings: Settings, machine: str, signal: str, day: dt.date, start_h: float, end_h: float) -> None:
    """``signal`` freezes at one value between ``start_h`` and ``end_h``."""
    _table(settings, "telemetry").update(
        predicate=f"{_window(machine, day, start_h, end_h)} AND signal = '{signal}'", updates={"value": "1.2345"}
    )


def duplicated_burst(
    settings: Settings, machine: str, day: dt.date, start_h: float, end_h: float, *, new_seq: bool
) -> int:
    """The machine's telemetry of ``[start_h, end_h)`` arrives once more after a reconnect.

    ``new_seq=False``: a re-send of the same events (same ``seq``: at-least-once delivery);
    ``new_seq=True``: the gateway numbered the replayed burst afresh (seq after the machine's last).
    Returns the rows appended.
    """
    table = _table(settings, "telemetry")
    dataset = table.to_pyarrow_dataset()
    day_rows = dataset.to_table(filter=pc.field("event_date") == pa.scalar(day, pa.date32()))
    mine = pc.equal(day_rows["machine_id"].cast(pa.string()), machine)
    times = day_rows["event_ts"].cast(pa.timestamp("us", "UTC"))
    inside = pc.and_(pc.greater_equal(times, _at(day, start_h)), pc.less(times, _at(day, end_h)))
    burst = day_rows.filter(pc.and_(mine, inside)).sort_by("seq")
    offsets = pc.max(dataset.to_table(columns=["kafka_offset"])["kafka_offset"]).as_py() + 1
    burst = burst.set_column(
        burst.schema.get_field_index("kafka_offset"),
        "kafka_offset",
        pa.array(range(offsets, offsets + burst.num_rows), pa.int64()),
    )
    if new_seq:
        every = dataset.to_table(columns=["machine_id", "seq"])
        first = pc.max(every.filter(pc.equal(every["machine_id"].cast(pa.string()), machine))["seq"]).as_py() + 1
        burst = burst.set_column(
            burst.schema.get_field_index("seq"), "seq", pa.array(range(first, first + burst.num_rows), pa.int64())
        )
    write_deltalake(
        table.table_uri,
        burst.cast(dataset.schema),
        mode="append",
        partition_by=list(BRONZE_PARTITION_COLUMNS),
        storage_options=delta_storage_options(settings),
    )
    return burst.num_rows


def missing_shift(settings: Settings, machine: str, day: dt.date, start_h: float, end_h: float) -> None:
    """Nothing of the machine between ``start_h`` and ``end_h``, in any stream (its gateway was down)."""
    for stream in ("telemetry", "events", "quality", "energy"):
        _table(settings, stream).delete(_window(machine, day, start_h, end_h))


def lost_machine_id(settings: Settings, stream: str, machine: str, day: dt.date, start_h: float, end_h: float) -> None:
    """Rows of the machine lose their machine id (an import's mapping bug).

    Bronze's schema has ``machine_id`` NOT NULL, so what lands there is an empty id; a null
    is refused by the Delta writer (``test_bronze_refuses_a_null_machine_id``).
    """
    _table(settings, stream).update(predicate=_window(machine, day, start_h, end_h), updates={"machine_id": "''"})


def sensor_offset(settings: Settings, signal: str, day: dt.date, offset: float) -> None:
    """Every machine's ``signal`` reads ``offset`` higher all ``day`` (a sensor recalibrated wrongly).

    Small enough to stay inside the signal's valid range: only the features' distribution shows it.
    """
    _table(settings, "telemetry").update(
        predicate=f"event_date = '{day.isoformat()}' AND signal = '{signal}'", updates={"value": f"value + {offset}"}
    )
