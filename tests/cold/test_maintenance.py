"""Table maintenance on a real Delta table on S3: fewer files, the same rows, nothing a reader needs lost."""

from __future__ import annotations

import datetime as dt
import threading

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
from cold_data import cold_resources, decode, telemetry, write_bronze
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from plantstream.assets.cold.checksums import content_checksum
from plantstream.assets.cold.lake_assets import MAINTENANCE_ASSETS, tier_tables
from plantstream.assets.cold.maintenance import maintain_table, needs_reorganising, table_layout
from plantstream.connect.s3 import delta_storage_options
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.orchestration.resources import Lake
from plantstream.streaming.bronze_sink import bronze_app_id, bronze_uri

pytestmark = pytest.mark.integration
TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [TODAY - dt.timedelta(days=2), TODAY - dt.timedelta(days=1), TODAY]
SMALL_TARGET = 4 * 1024 * 1024


def test_compaction_and_z_order_cut_the_files_and_keep_rows_checksums_and_offsets(stream_settings) -> None:
    settings = stream_settings()
    uri, storage = bronze_uri(settings, TELEMETRY_STREAM), delta_storage_options(settings)
    rows = decode(TELEMETRY_STREAM, telemetry(6, DAYS, 400))
    write_bronze(settings, TELEMETRY_STREAM, rows, commits=30)  # the stream: a small commit per snapshot
    app = bronze_app_id("factory.machine.telemetry", 0)
    write_deltalake(  # a commit carrying the stream's application transaction, as the bronze sink's do
        uri,
        rows.slice(0, 0),
        mode="append",
        storage_options=storage,
        commit_properties=CommitProperties(app_transactions=[Transaction(app, 12_345)]),
    )
    table = DeltaTable(uri, storage_options=storage)
    version_before = table.version()
    before = table_layout(table)
    checksum_before = content_checksum(table.to_pyarrow_dataset())

    report = maintain_table(uri, storage, name="bronze/telemetry", target_bytes=SMALL_TARGET, today=TODAY)

    table = DeltaTable(uri, storage_options=storage)
    after = table_layout(table)
    assert report.files_before == before.files >= 30
    assert report.files_after == after.files <= before.files // 5
    assert all(p.writers == 1 for p in after.partitions), after  # each day now one rewrite
    assert after.rows == before.rows == rows.num_rows
    assert content_checksum(table.to_pyarrow_dataset()) == checksum_before
    assert table.transaction_version(app) == 12_345  # the stream resumes where it was
    # Closed days are Z-ordered on machine and time; today (still written to) only compacted.
    assert report.z_ordered_partitions == [d.isoformat() for d in DAYS[:-1]]
    assert report.z_order_columns == ["machine_id", "event_ts"]
    assert report.checkpoint_version == table.version()
    assert report.files_vacuumed == 0  # removed files are younger than the retention

    # A reader of the old snapshot (a run that started before) still reads every file.
    old = DeltaTable(uri, version=version_before, storage_options=storage)
    assert content_checksum(old.to_pyarrow_dataset()) == checksum_before

    # Nothing to do on a second pass: the layout itself says the days are organised.
    again = maintain_table(uri, storage, name="bronze/telemetry", target_bytes=SMALL_TARGET, today=TODAY)
    assert (again.files_after, again.version_after, again.z_ordered_partitions) == (after.files, table.version(), [])

    # A late event in a closed day makes that day need ordering again, and only that day.
    late = decode(TELEMETRY_STREAM, telemetry(6, [DAYS[0]], 1), first_offset=10_000)
    write_bronze(settings, TELEMETRY_STREAM, late, commits=1)
    third = maintain_table(uri, storage, name="bronze/telemetry", target_bytes=SMALL_TARGET, today=TODAY)
    assert third.z_ordered_partitions == [DAYS[0].isoformat()]
    assert all(p.writers == 1 for p in table_layout(DeltaTable(uri, storage_options=storage)).partitions)
    # A filtered read on a string column works on the rewritten files (pyarrow prunes by their statistics).
    one_machine = (
        DeltaTable(uri, storage_options=storage)
        .to_pyarrow_dataset()
        .to_table(filter=pads.field("machine_id") == "cnc-03")
    )
    assert one_machine.num_rows == rows.filter(pc.equal(rows["machine_id"], "cnc-03")).num_rows + 1


def test_vacuum_refuses_a_retention_shorter_than_the_tables(stream_settings) -> None:
    settings = stream_settings()
    uri, storage = bronze_uri(settings, TELEMETRY_STREAM), delta_storage_options(settings)
    write_bronze(settings, TELEMETRY_STREAM, decode(TELEMETRY_STREAM, telemetry(2, DAYS[:1], 10)), commits=2)
    with pytest.raises(Exception, match=r"(?i)retention"):
        maintain_table(uri, storage, name="bronze/telemetry", vacuum_retention_hours=1, today=TODAY)


def test_a_partition_needs_organising_when_its_files_come_from_several_writes() -> None:
    from plantstream.assets.cold.maintenance import PartitionLayout, writer_id

    one = "event_date=2026-01-01/part-00000-6cc7c833-7829-4973-8ddb-60f71d88535b-c000.zstd.parquet"
    same = "event_date=2026-01-01/part-00003-6cc7c833-7829-4973-8ddb-60f71d88535b-c000.zstd.parquet"
    other = "event_date=2026-01-01/part-00000-a177190e-a096-4e26-9a36-4b8fa6603e23-c000.snappy.parquet"
    assert writer_id(one) == writer_id(same) != writer_id(other)
    assert writer_id("odd-name.parquet") == "odd-name.parquet"  # unknown shapes: a writer each
    assert not needs_reorganising(PartitionLayout("d", files=5, bytes=10, rows=1, writers=1))  # one rewrite
    assert needs_reorganising(PartitionLayout("d", files=2, bytes=10, rows=1, writers=2))


def test_the_maintenance_assets_report_files_and_bytes_for_every_table_of_their_tier(stream_settings) -> None:
    settings = stream_settings()
    lake = Lake(settings)
    rows = decode(TELEMETRY_STREAM, telemetry(3, DAYS[:2], 50))
    write_bronze(settings, TELEMETRY_STREAM, rows, commits=8)
    gold = pa.table({"machine_id": ["a", "b"], "day": pa.array(DAYS[:2], pa.date32()), "oee": [0.5, 0.7]})
    for half in (gold.slice(0, 1), gold.slice(1)):  # two small files in a table only the lake knows about
        write_deltalake(lake.table_uri("gold", "example"), half, mode="append", storage_options=lake.storage_options)
    assert tier_tables(lake, "gold") == ["example"]
    bronze_asset, _silver_asset, gold_asset = MAINTENANCE_ASSETS

    result = dg.materialize([bronze_asset, gold_asset], resources=cold_resources(settings))

    assert result.success
    (bronze,) = result.asset_materializations_for_node("maintenance__bronze")
    (gold_result,) = result.asset_materializations_for_node("maintenance__gold")
    bronze_meta = {k: v.value for k, v in bronze.metadata.items()}
    assert bronze_meta["tables"] == 1  # only telemetry has a bronze table here
    assert bronze_meta["files_before"] > bronze_meta["files_after"] == 2
    gold_meta = {k: v.value for k, v in gold_result.metadata.items()}
    assert (gold_meta["tables"], gold_meta["files_before"], gold_meta["files_after"]) == (1, 2, 1)
    assert lake.row_count("gold", "example") == 2


def test_maintenance_while_the_stream_appends_loses_nothing_and_blocks_nobody(stream_settings) -> None:
    settings = stream_settings()
    uri, storage = bronze_uri(settings, TELEMETRY_STREAM), delta_storage_options(settings)
    write_bronze(settings, TELEMETRY_STREAM, decode(TELEMETRY_STREAM, telemetry(6, DAYS[1:], 300)), commits=30)
    before = DeltaTable(uri, storage_options=storage).to_pyarrow_dataset().count_rows()
    more = decode(TELEMETRY_STREAM, telemetry(6, [TODAY], 60), first_offset=100_000)
    failures: list[BaseException] = []

    def stream() -> None:  # the stream's appends to today's partition go on
        try:
            write_bronze(settings, TELEMETRY_STREAM, more, commits=15)
        except BaseException as exc:
            failures.append(exc)

    appender = threading.Thread(target=stream)
    appender.start()
    report = maintain_table(uri, storage, name="bronze/telemetry", target_bytes=SMALL_TARGET, today=TODAY)
    appender.join(120)

    assert not failures and not appender.is_alive()
    table = DeltaTable(uri, storage_options=storage)
    assert table.to_pyarrow_dataset().count_rows() == before + more.num_rows
    assert report.row_check == "equal"
    assert report.z_ordered_partitions == [DAYS[1].isoformat()]
