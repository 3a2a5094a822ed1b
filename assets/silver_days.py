"""Silver by day: which ``event_date`` partitions of each silver table changed, as Dagster partitions.

Silver is one incremental, unpartitioned asset per stream (it merges whatever bronze got,
whichever days that touches); gold is partitioned by day.  If gold depended on silver
directly, every new reading would make *every* gold day stale.  Instead each stream has an
external, daily-partitioned asset ``silver/<stream>_by_day`` between the two:

* its partition ``D`` stands for silver's rows with ``event_date = D``, and its data version
  is their count.  Silver only ever gains rows (insert-if-absent on ``(machine_id, seq)``),
  so a day's count changes exactly when its content does, and table maintenance
  (compaction, Z-order) leaves it alone;
* silver's materialisation reports the days it changed (the partitions of the data files
  its commit added) as ``AssetObservation``\\ s with that data version, and nothing else;
* gold assets depend on these day assets with a partition mapping (the days a gold day
  reads, ``assets/gold/inputs.py``).  Dagster then shows exactly the gold days whose
  inputs got a new version as *stale* ("has a new dependency data version"); materialising
  such a day again makes it fresh.

So a late reading that lands in an old day makes that day's gold stale, and only it (and
the neighbours that read the day: the day before, for the state at its end, and the day
after, for the state at its start).
"""

# No `from __future__ import annotations`: Dagster inspects the context annotation at runtime.
import datetime as dt
from collections.abc import Iterable

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from plantstream.assets.gold.calendar import GOLD_PARTITIONS
from plantstream.contract.streams import STREAMS, StreamSpec

OWNERS = ["team:data-platform"]
DATA_VERSION_TAG = "dagster/data_version"


def day_key(spec: StreamSpec) -> dg.AssetKey:
    return dg.AssetKey(["silver", f"{spec.name}_by_day"])


SILVER_DAYS: dict[str, dg.AssetSpec] = {
    spec.name: dg.AssetSpec(
        day_key(spec),
        description=f"The days of silver {spec.name}: partition D is silver's rows with event_date = D, its data "
        "version their count. Reported by silver's materialisations for the days they changed, so the gold days "
        "that read a day become stale when (and only when) a late or new row lands in it.",
        deps=[dg.AssetKey(["silver", spec.name])],
        partitions_def=GOLD_PARTITIONS,
        group_name="lakehouse",
        owners=OWNERS,
        kinds={"delta", "s3"},
        metadata={"partitioned_by": "event_date", "data_version": "rows of the day in silver"},
    )
    for spec in STREAMS
}


def _add_actions(table: DeltaTable) -> pa.Table:
    actions = table.get_add_actions(flatten=True)
    return actions if isinstance(actions, pa.Table) else pa.table(actions)


def rows_by_day(table: DeltaTable, days: Iterable[dt.date] | None = None) -> dict[dt.date, int]:
    """Rows per ``event_date`` of a silver table, from the Delta log's file statistics (no data read)."""
    actions = _add_actions(table)
    if not actions.num_rows:
        return {}
    wanted = None if days is None else set(days)
    if "num_records" in actions.column_names and not actions["num_records"].null_count:
        grouped = actions.group_by("partition.event_date").aggregate([("num_records", "sum")])
        days_, rows = grouped["partition.event_date"].to_pylist(), grouped["num_records_sum"].to_pylist()
    else:  # a writer that kept no statistics: count the rows themselves
        dates = table.to_pyarrow_dataset().to_table(columns=["event_date"])
        grouped = dates.group_by("event_date").aggregate([("event_date", "count")])
        days_, rows = grouped["event_date"].to_pylist(), grouped["event_date_count"].to_pylist()
    return {day: int(n) for day, n in zip(days_, rows, strict=True) if wanted is None or day in wanted}


def data_files(table: DeltaTable | None) -> set[str]:
    """The data files of a table's current version (none for no table)."""
    return set() if table is None else set(_add_actions(table)["path"].to_pylist())


def days_added(after: DeltaTable, files_before: set[str]) -> list[dt.date]:
    """The ``event_date`` partitions of the data files ``after`` has that were not in ``files_before``."""
    new = _add_actions(after)
    if files_before:
        old = pa.array(sorted(files_before), pa.string())
        new = new.filter(pc.invert(pc.is_in(new["path"], value_set=old)))
    return sorted(set(new["partition.event_date"].to_pylist()))


def report_silver_days(
    context: dg.AssetExecutionContext, spec: StreamSpec, table: DeltaTable, days: Iterable[dt.date]
) -> list[str]:
    """Log the new data version of each changed day of ``silver/<stream>``; returns the partition keys.

    The first time (no observation of the day asset yet) every day silver holds is reported,
    so days written before this asset existed get a version too.  Days outside the
    partitions (before the first, or beyond today: a device clock far ahead) are logged and
    left out: no gold day reads them.
    """
    key = day_key(spec)
    never_observed = not context.instance.fetch_observations(dg.AssetRecordsFilter(asset_key=key), limit=1).records
    counts = rows_by_day(table, None if never_observed else days)
    valid = set(GOLD_PARTITIONS.get_partition_keys())
    reported, outside = [], []
    for day, rows in sorted(counts.items()):
        partition = day.isoformat()
        if partition not in valid:
            outside.append(partition)
            continue
        context.log_event(
            dg.AssetObservation(
                asset_key=key,
                partition=partition,
                tags={DATA_VERSION_TAG: str(rows)},
                metadata={"dagster/row_count": rows},
            )
        )
        reported.append(partition)
    if outside:
        context.log.warning(
            f"silver {spec.name}: rows for days outside the gold partitions {outside[:5]} (of {len(outside)}): "
            "no gold day reads them"
        )
    return reported
