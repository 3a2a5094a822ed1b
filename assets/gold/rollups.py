"""Telemetry rollups: hourly and daily aggregates per machine and signal.

A dashboard that shows a quarter of a year reads 90 daily rows per machine and signal
instead of millions of raw readings.  Both rollups are
:func:`plantstream.domain.aggregates.window_aggregates` over the day's silver telemetry
with 3,600 s and 86,400 s windows: the one definition of count, min, max, mean,
population std, p95 and last that the stream's ``telemetry_windows`` use too, so a rollup
and the stream's windows over the same readings agree exactly.  Windows are epoch-aligned,
so an hour or a UTC day never straddles two partitions.

Rows carry the machine's site, area and line (as silver has them) for line-level queries.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from plantstream.assets.gold.inputs import day_filter
from plantstream.domain.aggregates import WINDOW_AGGREGATE_SCHEMA, window_aggregates
from plantstream.orchestration.resources import Lake

HOUR_S, DAY_S = 3_600, 86_400
IDENTITY = ("site", "area", "line")
ROLLUP_SCHEMA = pa.schema(
    [pa.field("day", pa.date32()), *(pa.field(c, pa.string()) for c in IDENTITY), *WINDOW_AGGREGATE_SCHEMA]
)
_READ = ["machine_id", "signal", "seq", "event_time", "value", "kafka_offset", *IDENTITY]
#: Readings aggregated at once (``window_aggregates`` holds a few times its input: ~1 GiB here).
GROUP_ROWS = 4_000_000


def _with_identity(day: dt.date, aggregates: pa.Table, identity: pa.Table) -> pa.Table:
    if not aggregates.num_rows:
        return ROLLUP_SCHEMA.empty_table()
    joined = aggregates.join(identity, "machine_id", join_type="left outer")
    joined = joined.append_column("day", pa.array([day] * joined.num_rows, pa.date32()))
    ordered = joined.select(ROLLUP_SCHEMA.names).cast(ROLLUP_SCHEMA)
    return ordered.sort_by([("machine_id", "ascending"), ("signal", "ascending"), ("window_start", "ascending")])


def rollups_of(day: dt.date, telemetry: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Hourly and daily rollups of one day's silver telemetry rows."""
    events = telemetry.rename_columns(["event_ts" if c == "event_time" else c for c in telemetry.column_names])
    identity = events.select(["machine_id", *IDENTITY]).group_by(["machine_id", *IDENTITY]).aggregate([])
    identity = identity.group_by("machine_id", use_threads=False).aggregate([(c, "first") for c in IDENTITY])
    identity = identity.rename_columns([*(f"{c}_first" for c in ()), *identity.column_names])
    identity = identity.rename_columns([c.removesuffix("_first") for c in identity.column_names])
    hourly = _with_identity(day, window_aggregates(events, HOUR_S), identity)
    daily = _with_identity(day, window_aggregates(events, DAY_S), identity)
    return hourly, daily


def _machine_groups(dataset: pads.Dataset, where: pads.Expression, groups: int, folder: Path) -> list[Path]:
    """One pass over the day's rows, split by machine into ``groups`` Arrow files under ``folder``.

    A machine's rows all land in one group (its first appearance assigns it round-robin),
    so aggregating each group alone gives every window of every machine exactly once.
    """
    paths = [folder / f"group-{g}.arrow" for g in range(groups)]
    schema = dataset.schema
    fields = pa.schema([schema.field(c) for c in _READ])
    writers = [pa.ipc.new_file(str(path), fields) for path in paths]
    assigned: dict[str, int] = {}
    try:
        for batch in dataset.to_batches(columns=_READ, filter=where, batch_size=1 << 20):
            if not batch.num_rows:
                continue
            encoded = batch.column("machine_id").dictionary_encode()
            for machine in encoded.dictionary.to_pylist():
                assigned.setdefault(machine, len(assigned) % groups)
            group_of = pa.array([assigned[m] for m in encoded.dictionary.to_pylist()], pa.int32())
            row_group = group_of.take(encoded.indices)
            for g, writer in enumerate(writers):
                part = batch.filter(pc.equal(row_group, g))
                if part.num_rows:
                    writer.write_batch(part)
    finally:
        for writer in writers:
            writer.close()
    return paths


def telemetry_rollups(lake: Lake, day: dt.date) -> tuple[pa.Table, pa.Table, int]:
    """Hourly and daily rollups of ``day`` from silver, and the readings they summarise.

    A big day is aggregated a group of machines at a time (``GROUP_ROWS`` readings per
    group, split in one pass into local Arrow files): ``window_aggregates`` needs a few
    times its input in memory, and a plant-day can be tens of millions of readings.
    """
    table = lake.table("silver", "telemetry")
    if table is None:
        raise LookupError("silver/telemetry does not exist yet: materialise silver first")
    dataset = table.to_pyarrow_dataset()
    where = day_filter(day, day)
    groups = max(1, math.ceil(dataset.count_rows(filter=where) / GROUP_ROWS))
    if groups == 1:
        hourly, daily = rollups_of(day, dataset.to_table(columns=_READ, filter=where))
    else:
        parts: list[tuple[pa.Table, pa.Table]] = []
        with tempfile.TemporaryDirectory(prefix="plantstream-rollups-") as folder:
            for path in _machine_groups(dataset, where, groups, Path(folder)):
                with pa.memory_map(str(path)) as source:
                    parts.append(rollups_of(day, pa.ipc.open_file(source).read_all()))
        order = [("machine_id", "ascending"), ("signal", "ascending"), ("window_start", "ascending")]
        hourly = pa.concat_tables([h for h, _ in parts]).sort_by(order)
        daily = pa.concat_tables([d for _, d in parts]).sort_by(order)
    readings = int(pc.sum(daily["count"]).as_py() or 0) if daily.num_rows else 0
    return hourly, daily, readings
