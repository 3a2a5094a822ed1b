"""The warm tier's behaviour, one suite run against both backends (a DuckDB file, a real
PostgreSQL server): every type round-trips, a partition replace is atomic and idempotent,
a failed write leaves the old partition, and concurrent writer processes all succeed
leaving exactly one complete write per partition."""

from __future__ import annotations

import datetime as dt
import math
import multiprocessing
import queue
import random
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from plantstream.connect.warm import (
    DuckDBWarmStore,
    WarmLockTimeoutError,
    WarmQueryError,
    WarmSchemaError,
    WarmStore,
    WarmTableMissingError,
    WarmWriteError,
    warm_duckdb_path,
    warm_store,
)
from plantstream.settings import Settings, SettingsError, load_settings

pytestmark = pytest.mark.integration

UTC = dt.UTC
DAY = dt.date(2026, 3, 14)


def every_type(day: dt.date = DAY) -> pa.Table:
    """One column of each stored type, with the values that break naive encoders."""
    return pa.table(
        {
            "id": pa.array([1, 2, 3, 4, 5], pa.int64()),
            "day": pa.array([day] * 5, pa.date32()),
            "flag": pa.array([True, False, None, True, False]),
            "small": pa.array([-32768, 32767, None, 0, 7], pa.int16()),
            "medium": pa.array([-(2**31), 2**31 - 1, None, 0, 7], pa.int32()),
            "big": pa.array([-(2**63), 2**63 - 1, None, 0, 7], pa.int64()),
            "ratio": pa.array([1.1, -float("inf"), None, 3.4028234663852886e38, float("nan")], pa.float32()),
            "value": pa.array([0.1 + 0.2, float("inf"), None, -5e-324, float("nan")], pa.float64()),
            "name": pa.array(
                ["plain", "", None, 'quote " comma , newline \n tab \t back \\ dot \\.', "Ölpumpe ✓ 日本"]
            ),
            "at": pa.array(
                [
                    dt.datetime(2026, 3, 14, 5, 6, 7, 891011, tzinfo=UTC),
                    dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                    None,
                    dt.datetime(2026, 3, 14, tzinfo=UTC),
                    dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


def comparable(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with NaN made comparable (NaN != NaN would fail every equality)."""
    return [
        {k: ("NaN" if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in table.to_pylist()
    ]


def checksum(store: WarmStore, table: str) -> str:
    """Content hash of a whole table, in key order."""
    import hashlib

    rows = store.read(f'SELECT * FROM "{table}" ORDER BY day, machine_id')
    return hashlib.sha256(repr((rows.schema, comparable(rows))).encode()).hexdigest()


def oee_rows(day: dt.date, n: int, *, writer: int = 0, round_: int = 0) -> pa.Table:
    """A gold-like daily partition: one row per machine, values tagged with who wrote them."""
    return pa.table(
        {
            "day": pa.array([day] * n, pa.date32()),
            "machine_id": pa.array([f"m{i:03d}" for i in range(n)], pa.string()),
            "writer": pa.array([writer] * n, pa.int16()),
            "round": pa.array([round_] * n, pa.int16()),
            "oee": pa.array([((writer * 31 + round_ * 7 + i) % 100) / 100 for i in range(n)], pa.float64()),
            "computed_at": pa.array(
                [dt.datetime(2026, 3, 15, writer, round_, i % 60, tzinfo=UTC) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )


# ---------------------------------------------------------------------------------------
# types


def test_every_type_round_trips(warm_settings: Settings, unique_name: Callable[..., str]) -> None:
    store = warm_store(warm_settings)
    table = unique_name("w", sep="_")
    data = every_type()
    write = store.replace_partition(table, "day", DAY, data, primary_key=["day", "id"])
    assert (write.rows_written, write.rows_deleted, write.created_table) == (5, 0, True)
    back = store.read(f'SELECT * FROM "{table}" ORDER BY id')
    assert back.schema == data.schema
    assert comparable(back) == comparable(data)


def test_narrow_and_zoned_types_are_stored_as_their_canonical_type(
    warm_settings: Settings, unique_name: Callable[..., str]
) -> None:
    store = warm_store(warm_settings)
    table = unique_name("w", sep="_")
    berlin = pa.array([1_773_464_400_123_456_000, None], pa.timestamp("ns", tz="Europe/Berlin"))
    data = pa.table(
        {
            "day": pa.array([DAY, DAY], pa.date64()),
            "tiny": pa.array([-128, 127], pa.int8()),
            "byte": pa.array([0, 255], pa.uint8()),
            "word": pa.array([0, 65535], pa.uint16()),
            "dword": pa.array([0, 2**32 - 1], pa.uint32()),
            "label": pa.array(["a", "b"]).dictionary_encode(),
            "long_text": pa.array(["x", None], pa.large_string()),
            "at": berlin,
        }
    )
    store.replace_partition(table, "day", "2026-03-14", data)
    back = store.read(f'SELECT * FROM "{table}" ORDER BY tiny')
    assert back.schema == pa.schema(
        {
            "day": pa.date32(),
            "tiny": pa.int16(),
            "byte": pa.int16(),
            "word": pa.int32(),
            "dword": pa.int64(),
            "label": pa.string(),
            "long_text": pa.string(),
            "at": pa.timestamp("us", tz="UTC"),
        }
    )
    assert back.column("dword").to_pylist() == [0, 2**32 - 1]
    assert back.column("label").to_pylist() == ["a", "b"]
    # The same instant, now in UTC.
    assert back.column("at").to_pylist() == [dt.datetime(2026, 3, 14, 5, 0, 0, 123456, tzinfo=UTC), None]


@pytest.mark.parametrize(
    ("column", "match"),
    [
        (pa.array([dt.datetime(2026, 3, 14)], pa.timestamp("us")), "without time zone"),
        (pa.array([1], pa.uint64()), "int64 if the values fit"),
        (pa.array([1_773_464_400_000_000_001], pa.timestamp("ns", tz="UTC")), "would lose data"),
        (pa.array([b"\x00"], pa.binary()), "the warm tier stores"),
    ],
)
def test_types_that_cannot_be_stored_are_refused_before_anything_is_written(
    warm_settings: Settings, unique_name: Callable[..., str], column: pa.Array, match: str
) -> None:
    store = warm_store(warm_settings)
    table = unique_name("w", sep="_")
    with pytest.raises(WarmSchemaError, match=match):
        store.replace_partition(table, "day", DAY, pa.table({"day": [DAY], "x": column}))
    assert table not in store.tables()


# ---------------------------------------------------------------------------------------
# replace_partition


def test_replace_partition_is_idempotent_and_touches_only_its_partition(
    warm_settings: Settings, unique_name: Callable[..., str]
) -> None:
    store = warm_store(warm_settings)
    table = unique_name("w", sep="_")
    other = DAY + dt.timedelta(days=1)
    key = ["day", "machine_id"]
    store.replace_partition(table, "day", DAY, oee_rows(DAY, 30), primary_key=key)
    store.replace_partition(table, "day", other, oee_rows(other, 12), primary_key=key)
    first = checksum(store, table)

    again = store.replace_partition(table, "day", DAY.isoformat(), oee_rows(DAY, 30), primary_key=key)
    assert (again.rows_deleted, again.rows_written, again.created_table) == (30, 30, False)
    assert checksum(store, table) == first
    assert store.row_count(table) == 42

    # New content for one day: that day changes (even its row count), the other does not.
    store.replace_partition(table, "day", DAY, oee_rows(DAY, 25, round_=1), primary_key=key)
    counts = store.read(f'SELECT day, count(*) AS n, max("round") AS r FROM "{table}" GROUP BY day ORDER BY day')
    assert counts.to_pylist() == [{"day": DAY, "n": 25, "r": 1}, {"day": other, "n": 12, "r": 0}]

    # An empty table empties the partition.
    store.replace_partition(table, "day", other, oee_rows(other, 0), primary_key=key)
    assert store.row_count(table) == 25


def test_failed_writes_leave_the_old_partition_intact(warm_settings: Settings, unique_name: Callable[..., str]) -> None:
    store = warm_store(warm_settings)
    table = unique_name("w", sep="_")
    key = ["day", "machine_id"]
    store.replace_partition(table, "day", DAY, oee_rows(DAY, 20), primary_key=key)
    before = checksum(store, table)

    # A schema that is not the table's: refused before the transaction touches a row.
    wrong_type = oee_rows(DAY, 20).set_column(4, "oee", pa.array(["high"] * 20))
    with pytest.raises(WarmSchemaError, match=r"oee: table has .*, data has"):
        store.replace_partition(table, "day", DAY, wrong_type, primary_key=key)
    with pytest.raises(WarmSchemaError, match=r"not in the table \['extra'\]"):
        store.replace_partition(table, "day", DAY, oee_rows(DAY, 20).append_column("extra", pa.array([1] * 20)))

    # Refused by the database after the old rows were already deleted in the transaction:
    # a duplicate key in the new rows.  The rollback must bring them back.
    duplicated = pa.concat_tables([oee_rows(DAY, 5, round_=9), oee_rows(DAY, 1, round_=9)])
    with pytest.raises(WarmWriteError, match="rolled back"):
        store.replace_partition(table, "day", DAY, duplicated, primary_key=key)

    # Rows of another day in the data for this one.
    stray = pa.concat_tables([oee_rows(DAY, 3), oee_rows(DAY + dt.timedelta(days=1), 2)])
    with pytest.raises(WarmSchemaError, match="2 of 5 rows"):
        store.replace_partition(table, "day", DAY, stray, primary_key=key)

    assert checksum(store, table) == before


def test_primary_key_must_include_the_partition_column(
    warm_settings: Settings, unique_name: Callable[..., str]
) -> None:
    store = warm_store(warm_settings)
    with pytest.raises(WarmSchemaError, match="must include the partition column"):
        store.replace_partition(unique_name("w", sep="_"), "day", DAY, oee_rows(DAY, 3), primary_key=["machine_id"])


# ---------------------------------------------------------------------------------------
# read, tables, row_count


def test_read_runs_one_read_only_query_with_dollar_placeholders(
    warm_settings: Settings, unique_name: Callable[..., str]
) -> None:
    store = warm_store(warm_settings)
    table = unique_name("w", sep="_")
    store.replace_partition(table, "day", DAY, oee_rows(DAY, 10), primary_key=["day", "machine_id"])
    assert table in store.tables()
    assert store.row_count(table) == 10

    picked = store.read(
        f"SELECT machine_id FROM \"{table}\" WHERE day = $1 AND machine_id LIKE 'm00%' AND oee >= $2 ORDER BY 1",
        [DAY, 0.05],
    )
    expected = oee_rows(DAY, 10).filter(pc.greater_equal(pc.field("oee"), 0.05))["machine_id"].to_pylist()
    assert picked["machine_id"].to_pylist() == expected

    with pytest.raises(WarmQueryError):
        store.read(f'DELETE FROM "{table}"')
    with pytest.raises(WarmQueryError):
        store.read(f'SELECT 1 AS one; DELETE FROM "{table}"')
    with pytest.raises(WarmQueryError):
        store.read("SELECT * FROM no_such_table")
    assert store.row_count(table) == 10
    with pytest.raises(WarmTableMissingError):
        store.row_count(unique_name("missing", sep="_"))


# ---------------------------------------------------------------------------------------
# concurrency

WRITERS = 4
ROUNDS = 3
SHARED_DAYS = (dt.date(2026, 1, 1), dt.date(2026, 1, 2))


def own_days(writer: int) -> tuple[dt.date, ...]:
    return (dt.date(2026, 2, 1 + 2 * writer), dt.date(2026, 2, 2 + 2 * writer))


def rows_for(day: dt.date, writer: int, round_: int) -> pa.Table:
    """What ``writer`` writes to ``day`` in ``round_``: a different row count for every write,
    so a partition holding two writes, or half of one, cannot pass for a valid one."""
    return oee_rows(day, 20 + 4 * writer + round_ + day.day % 3, writer=writer, round_=round_)


def _concurrent_writer(settings: Settings, writer: int, tables: tuple[str, str], start: Any, results: Any) -> None:
    """One Dagster-run stand-in: every round replaces each of its days in both tables."""
    try:
        store = warm_store(settings)
        plan = [(day, table) for day in (*SHARED_DAYS, *own_days(writer)) for table in tables]
        start.wait(120)  # released together, after every process finished its imports
        began = time.time()
        lock_wait = 0.0
        for round_ in range(ROUNDS):
            random.Random(writer * 100 + round_).shuffle(plan)  # writers meet in different orders
            for day, table in plan:
                key = ["day", "machine_id"] if table == tables[0] else None
                lock_wait += store.replace_partition(
                    table, "day", day, rows_for(day, writer, round_), primary_key=key
                ).lock_wait_s
        results.put({"writer": writer, "began": began, "ended": time.time(), "lock_wait_s": lock_wait})
    except BaseException:
        results.put({"writer": writer, "error": traceback.format_exc()})


def _concurrent_reader(settings: Settings, tables: tuple[str, str], start: Any, stop: Any, results: Any) -> None:
    """Reads while the writers write: every partition it sees must be one whole write."""
    try:
        store = warm_store(settings)
        start.wait(120)
        snapshots, torn = 0, []
        while not stop.is_set():
            for table in tables:
                if table not in store.tables():
                    continue
                seen = store.read(
                    f'SELECT day, count(*) AS n, count(DISTINCT writer * 1000 + "round") AS writes,'
                    f' min(writer) AS writer, min("round") AS r FROM "{table}" GROUP BY day'
                )
                for row in seen.to_pylist():
                    expected = rows_for(row["day"], row["writer"], row["r"]).num_rows
                    if row["writes"] != 1 or row["n"] != expected:
                        torn.append({"table": table, **row, "expected_n": expected})
                snapshots += 1
        results.put({"reader": True, "snapshots": snapshots, "torn": torn[:10]})
    except BaseException:
        results.put({"reader": True, "error": traceback.format_exc()})


def t0_wall(reports: list[dict[str, Any]]) -> float:
    return min(r["began"] for r in reports)


def test_concurrent_writer_processes_all_succeed_and_leave_one_whole_write_per_partition(
    warm_settings: Settings, unique_name: Callable[..., str], record_property: Callable[[str, object], None]
) -> None:
    tables = (unique_name("wpk", sep="_"), unique_name("wnokey", sep="_"))
    ctx = multiprocessing.get_context("spawn")
    start, stop, written, read = ctx.Barrier(WRITERS + 2), ctx.Event(), ctx.Queue(), ctx.Queue()
    writers = [
        ctx.Process(target=_concurrent_writer, args=(warm_settings, w, tables, start, written)) for w in range(WRITERS)
    ]
    reader = ctx.Process(target=_concurrent_reader, args=(warm_settings, tables, start, stop, read))
    for process in (*writers, reader):
        process.start()
    t0 = time.monotonic()
    try:
        start.wait(120)
        reports = [written.get(timeout=300) for _ in writers]
        stop.set()
        reader_report = read.get(timeout=120)
    finally:
        stop.set()
        for process in (*writers, reader):
            process.join(60)
            if process.is_alive():
                process.kill()
    elapsed = time.monotonic() - t0
    errors = [r["error"] for r in (*reports, reader_report) if "error" in r]
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in (*writers, reader)] == [0] * (WRITERS + 1)
    # The writers really ran at the same time (otherwise this proves nothing).
    spans = [(round(r["began"] - t0_wall(reports), 3), round(r["ended"] - t0_wall(reports), 3)) for r in reports]
    assert max(r["began"] for r in reports) < min(r["ended"] for r in reports), f"writers did not overlap: {spans}"
    assert reader_report["snapshots"] > 0, reader_report
    assert reader_report["torn"] == []

    store = warm_store(warm_settings)
    for table in tables:
        for day in (*SHARED_DAYS, *(d for w in range(WRITERS) for d in own_days(w))):
            got = store.read(f'SELECT * FROM "{table}" WHERE day = $1 ORDER BY machine_id', [day])
            tags = set(zip(got["writer"].to_pylist(), got["round"].to_pylist(), strict=True))
            assert len(tags) == 1, f"{table} {day}: rows of several writes {tags}"
            ((writer, round_),) = tags
            # The last commit to a day is some writer's last round; an own day is its owner's.
            assert round_ == ROUNDS - 1, f"{table} {day}: round {round_} survived"
            if day not in SHARED_DAYS:
                assert day in own_days(writer), f"{table} {day}: written by {writer}"
            assert comparable(got) == comparable(rows_for(day, writer, round_)), f"{table} {day}: not one whole write"
        assert store.row_count(table) == sum(
            store.read(f'SELECT count(*) AS n FROM "{table}" WHERE day = $1', [d])["n"][0].as_py()
            for d in (*SHARED_DAYS, *(d for w in range(WRITERS) for d in own_days(w)))
        )
    writes = WRITERS * ROUNDS * len(tables) * (len(SHARED_DAYS) + 2)
    wall = max(r["ended"] for r in reports) - min(r["began"] for r in reports)
    waits = [round(r["lock_wait_s"], 2) for r in reports]
    for name, value in (("writes", writes), ("writers_wall_s", round(wall, 2)), ("lock_wait_s", waits)):
        record_property(name, value)
    print(  # shown with -s: the measured contention
        f"\n{warm_settings.warm.backend}: {writes} partition writes by {WRITERS} processes in {wall:.1f} s"
        f" ({elapsed:.1f} s with process start-up), lock waits per writer {waits} s,"
        f" {reader_report['snapshots']} consistent reader snapshots"
    )


CREATION_RACES = 25


def _race_to_create(base: str, writer: int, start: Any, results: Any) -> None:
    """Every round: all racers open the same missing DuckDB file at the same moment."""
    try:
        for i in range(CREATION_RACES):
            store = DuckDBWarmStore(Path(base) / f"race-{i}.duckdb", lock_timeout_s=60)
            day = DAY + dt.timedelta(days=writer)
            start.wait(60)
            store.replace_partition("oee_daily", "day", day, rows_for(day, writer, 0))
        results.put({"writer": writer})
    except BaseException:
        results.put({"writer": writer, "error": traceback.format_exc()})


def test_processes_racing_to_create_the_duckdb_file_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(WRITERS), ctx.Queue()
    racers = [ctx.Process(target=_race_to_create, args=(str(tmp_path), w, start, results)) for w in range(WRITERS)]
    for racer in racers:
        racer.start()
    try:
        reports = [results.get(timeout=300) for _ in racers]
    finally:
        for racer in racers:
            racer.join(60)
            if racer.is_alive():
                racer.kill()
    errors = [r["error"] for r in reports if "error" in r]
    assert not errors, "\n".join(errors)
    for i in range(CREATION_RACES):
        store = DuckDBWarmStore(tmp_path / f"race-{i}.duckdb", lock_timeout_s=60)
        assert store.read("SELECT count(DISTINCT day) AS days FROM oee_daily")["days"][0].as_py() == WRITERS
    # No private build files left behind: only the databases and their lock files.
    expected = {f"race-{i}.duckdb{suffix}" for i in range(CREATION_RACES) for suffix in ("", ".lock")}
    assert {p.name for p in tmp_path.iterdir()} == expected


# ---------------------------------------------------------------------------------------
# bounded waits

_HOLD_DUCKDB_FILE = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))  # the scenario: another process keeps the file open this long
con.close()
"""


def _hold_duckdb_file(path: str, seconds: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_DUCKDB_FILE, path, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"  # EOF (holder died) fails here too
    return holder


def test_duckdb_writer_waits_for_another_process_then_gives_up_naming_the_file(
    warm_settings_factory: Callable[..., Settings], unique_name: Callable[..., str]
) -> None:
    settings = warm_settings_factory("duckdb", lock_timeout_s=0.5)
    store = warm_store(settings)
    assert isinstance(store, DuckDBWarmStore)
    table = unique_name("w", sep="_")
    store.replace_partition(table, "day", DAY, oee_rows(DAY, 5))
    path = str(warm_duckdb_path(settings))

    holder = _hold_duckdb_file(path, 30.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(WarmLockTimeoutError, match=path) as raised:
            store.replace_partition(table, "day", DAY, oee_rows(DAY, 7))
        assert 0.5 <= time.monotonic() - t0 < 5
        assert "PLANTSTREAM_WARM__LOCK_TIMEOUT_S" in str(raised.value)
    finally:
        holder.kill()
        holder.wait(10)
    assert store.row_count(table) == 5

    # A holder that lets go within the budget is waited for, and the write goes through.
    holder = _hold_duckdb_file(path, 1.0)
    try:
        patient = DuckDBWarmStore(warm_duckdb_path(settings), lock_timeout_s=60)
        write = patient.replace_partition(table, "day", DAY, oee_rows(DAY, 7))
    finally:
        holder.wait(30)
    assert write.lock_wait_s >= 0.3
    assert store.row_count(table) == 7


def test_postgres_writer_waits_are_bounded_and_a_timed_out_write_changes_nothing(
    warm_settings_factory: Callable[..., Settings], postgres_server: Any, unique_name: Callable[..., str]
) -> None:
    settings = warm_settings_factory("postgres", lock_timeout_s=0.5)
    store = warm_store(settings)
    table = unique_name("w", sep="_")
    store.replace_partition(table, "day", DAY, oee_rows(DAY, 5), primary_key=["day", "machine_id"])
    with psycopg.connect(postgres_server.dsn) as blocker:  # a transaction until the block ends
        blocker.execute(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE')
        t0 = time.monotonic()
        with pytest.raises(WarmLockTimeoutError, match="PLANTSTREAM_WARM__LOCK_TIMEOUT_S"):
            store.replace_partition(table, "day", DAY, oee_rows(DAY, 7), primary_key=["day", "machine_id"])
        assert 0.5 <= time.monotonic() - t0 < 5
        blocker.rollback()
    assert store.row_count(table) == 5
    store.replace_partition(table, "day", DAY, oee_rows(DAY, 7), primary_key=["day", "machine_id"])
    assert store.row_count(table) == 7


def test_threads_of_one_process_take_turns_on_the_duckdb_file(
    warm_settings_factory: Callable[..., Settings], unique_name: Callable[..., str]
) -> None:
    """Threads of one process take turns too (each holds the lock file through its own
    descriptor): concurrent transactions in one DuckDB instance would conflict instead."""
    store = warm_store(warm_settings_factory("duckdb"))
    table = unique_name("w", sep="_")
    failures: queue.Queue[str] = queue.Queue()

    def write(writer: int) -> None:
        try:
            for round_ in range(5):
                for day in SHARED_DAYS:
                    store.replace_partition(
                        table, "day", day, rows_for(day, writer, round_), primary_key=["day", "machine_id"]
                    )
        except Exception:
            failures.put(traceback.format_exc())

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures.empty(), failures.get()
    for day in SHARED_DAYS:
        got = store.read(f'SELECT DISTINCT writer, "round" FROM "{table}" WHERE day = $1', [day])
        assert got.num_rows == 1 and got["round"][0].as_py() == 4


# ---------------------------------------------------------------------------------------
# settings


def test_local_default_is_a_duckdb_file_under_the_state_dir(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path)
    assert settings.warm.backend == "duckdb"
    assert warm_duckdb_path(settings) == tmp_path.resolve() / "warm" / "warm.duckdb"
    store = warm_store(settings)
    assert store.describe() == f"duckdb:{tmp_path.resolve() / 'warm' / 'warm.duckdb'}"
    custom = load_settings(state_dir=tmp_path, warm={"duckdb_path": str(tmp_path / "elsewhere.duckdb")})
    assert warm_duckdb_path(custom) == tmp_path.resolve() / "elsewhere.duckdb"


_PRODUCTION = {
    "profile": "production",
    "kafka": {"bootstrap_servers": "kafka-0.plant.example:9092"},
    "hotstore": {"host": "clickhouse.plant.example"},
    "s3": {"endpoint_url": "https://s3.plant.example"},
    "mlflow": {"tracking_uri": "https://mlflow.plant.example"},
}


@pytest.mark.parametrize(
    ("warm", "match"),
    [
        ({}, "PLANTSTREAM_WARM__BACKEND=postgres"),
        ({"backend": "postgres"}, "needs PLANTSTREAM_WARM__POSTGRES_DSN"),
        ({"backend": "postgres", "postgres_dsn": "postgresql://u:hunter2@127.0.0.1/warm"}, "refuses loopback"),
        ({"backend": "postgres", "postgres_dsn": "dbname=warm password=hunter2"}, "refuses loopback"),
        ({"backend": "postgres", "postgres_dsn": "host=db.plant password=hunter2 nonsense"}, "not a valid libpq"),
    ],
)
def test_production_needs_a_postgres_server(tmp_path, warm: dict[str, str], match: str) -> None:
    with pytest.raises(SettingsError, match=match) as raised:
        load_settings(state_dir=tmp_path, **_PRODUCTION, warm=warm)
    assert "hunter2" not in str(raised.value)


def test_production_settings_from_the_environment_and_the_dsn_is_never_shown(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PLANTSTREAM_WARM__BACKEND", "postgres")
    monkeypatch.setenv("PLANTSTREAM_WARM__POSTGRES_DSN", "postgresql://report:hunter2@warm.plant.example:5432/warm")
    settings = load_settings(state_dir=tmp_path, **_PRODUCTION)
    assert settings.warm.backend == "postgres"
    assert settings.redacted()["PLANTSTREAM_WARM__POSTGRES_DSN"] == "********"
    store = warm_store(settings)
    assert store.describe() == "postgresql://report@warm.plant.example:5432/warm"
    assert "hunter2" not in repr(store) + repr(settings) + str(settings.redacted())


# ---------------------------------------------------------------------------------------
# the Dagster resource


def test_a_daily_partitioned_asset_publishes_its_day_and_a_backfill_range(
    warm_settings_factory: Callable[..., Settings],
) -> None:
    import dagster as dg

    from plantstream.orchestration.warm_io import WarmTier, warm_metadata

    settings = warm_settings_factory("duckdb")
    days = dg.DailyPartitionsDefinition(start_date="2026-03-01", end_date="2026-04-01")

    # Untyped on purpose: this module's annotations are strings (``from __future__``) that
    # Dagster would resolve in module scope, where dagster is not imported (the spawned
    # writer processes import this module and should not pay for Dagster).
    @dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run(), required_resource_keys={"warm"})
    def oee_daily_warm(context):
        warm: WarmTier = context.resources.warm
        window = context.partition_time_window
        first = window.start.date()
        span = (window.end.date() - first).days
        # A gold-like frame for the run's days, except the last one (it had no production).
        frame = pa.concat_tables([oee_rows(first + dt.timedelta(days=i), 3 + i) for i in range(max(span - 1, 1))])
        writes = warm.publish(context, "oee_daily", frame, primary_key=["day", "machine_id"])
        return dg.MaterializeResult(metadata=warm_metadata(writes))

    tier = WarmTier(settings)
    tier.store.replace_partition(
        "oee_daily", "day", "2026-03-16", oee_rows(dt.date(2026, 3, 16), 9), primary_key=["day", "machine_id"]
    )

    single = dg.materialize([oee_daily_warm], resources={"warm": tier}, partition_key="2026-03-14")
    assert single.success
    (event,) = single.asset_materializations_for_node("oee_daily_warm")
    assert event.metadata["warm_rows_written"].value == 3
    assert event.metadata["warm_backend"].value == "duckdb"

    ranged = dg.materialize(
        [oee_daily_warm],
        resources={"warm": tier},
        tags={"dagster/asset_partition_range_start": "2026-03-14", "dagster/asset_partition_range_end": "2026-03-16"},
    )
    assert ranged.success
    counts = tier.store.read("SELECT day, count(*) AS n FROM oee_daily GROUP BY day ORDER BY day").to_pylist()
    # 03-14 replaced (3 rows, not doubled), 03-15 written, 03-16 emptied (its 9 rows were replaced by none).
    assert counts == [{"day": dt.date(2026, 3, 14), "n": 3}, {"day": dt.date(2026, 3, 15), "n": 4}]


def test_publishing_rows_outside_the_runs_days_writes_nothing(warm_settings_factory: Callable[..., Settings]) -> None:
    from plantstream.orchestration.warm_io import WarmTier

    tier = WarmTier(warm_settings_factory("duckdb"))
    frame = pa.concat_tables([oee_rows(DAY, 3), oee_rows(DAY + dt.timedelta(days=5), 2)])
    with pytest.raises(WarmSchemaError, match="2 rows are for day values outside"):
        tier.publish_partitions("oee_daily", frame, [DAY.isoformat()])
    assert tier.store.tables() == []
