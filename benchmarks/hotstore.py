"""Hot store benchmark: clickhouse-connect through the local service vs. chDB in process.

Starts its own hot store service through the platform supervisor (free loopback port,
temporary data dir, a throwaway password), builds a telemetry-like Arrow table, inserts it with ``insert_arrow`` and
``insert`` (Native), reads it back with ``query_arrow`` and checks the round trip, then
inserts the same table into a separate in-process chDB path for comparison.  The
in-process chDB session is the only one this process opens (chDB allows one per process).

Run: ``plantstream bench hotstore [--quick] [--json]``.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.connect.hotstore import hotstore_client
from plantstream.services.isolated import isolated_settings
from plantstream.services.supervisor import ensure_running
from plantstream.settings import Settings

FULL_ROWS = 1_000_000
QUICK_ROWS = 100_000
USERNAME = "bench"
START_TIMEOUT_S = 60.0

DDL = """
CREATE TABLE {name} (
    ts DateTime64(3, 'UTC'),
    site LowCardinality(String),
    machine LowCardinality(String),
    signal LowCardinality(String),
    value Float64,
    quality UInt8,
    seq UInt64
) ENGINE = MergeTree ORDER BY (machine, signal, ts)
"""
COLUMNS = ["ts", "site", "machine", "signal", "value", "quality", "seq"]


def telemetry_table(rows: int, seed: int = 42) -> pa.Table:
    """Telemetry-like data: 12 machines x 6 signals, 1 Hz-ish timestamps, noisy values."""
    rng = np.random.default_rng(seed)
    seq = np.arange(rows, dtype=np.uint64)
    machines = np.array([f"machine-{i:02d}" for i in range(12)], dtype=object)
    signals = np.array(["temperature", "vibration", "pressure", "current", "speed", "state"], dtype=object)
    return pa.table(
        {
            "ts": pa.array(1_767_225_600_000 + (seq // 72).astype(np.int64) * 1000, pa.timestamp("ms", tz="UTC")),
            "site": pa.array(np.full(rows, "plant-1", dtype=object), pa.string()),
            "machine": pa.array(machines[seq % 12], pa.string()),
            "signal": pa.array(signals[(seq // 12) % 6], pa.string()),
            "value": pa.array(rng.normal(50.0, 12.0, rows)),
            "quality": pa.array(rng.integers(0, 3, rows, dtype=np.uint8)),
            "seq": pa.array(seq),
        }
    )


@contextmanager
def _service(base: Path, password: str) -> Iterator[Settings]:
    """A hot store of the benchmark's own (free port, temporary data dir), via the supervisor."""
    settings = isolated_settings(base / "state", hotstore={"username": USERNAME, "password": password})
    with ensure_running(settings, services=["hotstore"]):
        yield settings


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def _round_trip_equal(sent: pa.Table, back: pa.Table) -> tuple[bool, dict[str, float]]:
    """Same rows, column by column (types cast to what was sent), plus numeric checksums."""
    equal = back.num_rows == sent.num_rows and back.column_names == sent.column_names
    if equal:
        for name in sent.column_names:
            got = back.column(name).combine_chunks().cast(sent.schema.field(name).type)
            equal = equal and got.equals(sent.column(name).combine_chunks())
    checksum = {
        "sum_seq": float(np.sum(back.column("seq").to_numpy(), dtype=np.uint64)) if back.num_rows else 0.0,
        "sum_value": float(np.sum(back.column("value").to_numpy())) if back.num_rows else 0.0,
    }
    return equal, checksum


def _direct_chdb_insert(base: Path, table: pa.Table) -> float:
    """Seconds to insert ``table`` with chDB in this process (``INSERT ... SELECT FROM Python(...)``)."""
    import chdb  # imported late: the CLI process should not load chDB unless benchmarking

    conn = chdb.connect(str(base / "direct-data"))
    try:
        conn.query(DDL.format(name="telemetry"))
        arrow_table = table  # referenced by name from the SQL below
        _, seconds = _timed(
            lambda: conn.query(f"INSERT INTO telemetry SELECT {', '.join(COLUMNS)} FROM Python(arrow_table)")
        )
        count = int(str(conn.query("SELECT count() FROM telemetry", "CSV")).strip())
        if count != table.num_rows:
            raise RuntimeError(f"direct chDB insert stored {count} of {table.num_rows} rows")
        del arrow_table
        return seconds
    finally:
        conn.close()


def run(settings: Settings, console: Console, quick: bool) -> dict[str, Any]:
    """Run the benchmark; returns the figures (also written to benchmarks/results/hotstore.json)."""
    del settings  # the benchmark runs its own service on a free port; nothing shared is touched
    rows = QUICK_ROWS if quick else FULL_ROWS
    password = secrets.token_urlsafe(16)
    figures: dict[str, Any] = {"rows": rows, "quick": quick}

    with tempfile.TemporaryDirectory(prefix="plantstream-bench-hotstore-") as tmp:
        base = Path(tmp)
        with console.status(f"building a {rows:,}-row telemetry table") as status:
            data = telemetry_table(rows)
            status.update("starting the hot store service")
            with _service(base, password) as service_settings:
                client = hotstore_client(service_settings)
                client.command(DDL.format(name="telemetry"))
                client.command(DDL.format(name="telemetry_native"))

                status.update("insert_arrow through clickhouse-connect")
                _, seconds = _timed(lambda: client.insert_arrow("telemetry", data))
                figures["insert_rows_per_s"] = rows / seconds
                stored = client.command("SELECT count() FROM telemetry")
                if stored != rows:
                    raise RuntimeError(f"the service stored {stored} of {rows} rows")

                status.update("query_arrow through clickhouse-connect")
                back, seconds = _timed(lambda: client.query_arrow(f"SELECT {', '.join(COLUMNS)} FROM telemetry"))
                figures["query_rows_per_s"] = rows / seconds
                back = back.sort_by("seq")
                figures["round_trip_equal"], checksum = _round_trip_equal(data, back)
                expected_seq = float(rows * (rows - 1) // 2)
                figures["round_trip_equal"] = figures["round_trip_equal"] and checksum["sum_seq"] == expected_seq
                figures["checksum"] = checksum
                del back

                status.update("insert (Native, lz4) through clickhouse-connect")
                columns = [data.column(name).to_numpy(zero_copy_only=False) for name in COLUMNS]
                columns[0] = data.column("ts").to_pylist()
                _, seconds = _timed(
                    lambda: client.insert("telemetry_native", columns, column_names=COLUMNS, column_oriented=True)
                )
                figures["insert_native_rows_per_s"] = rows / seconds
                stored = client.command("SELECT count() FROM telemetry_native")
                if stored != rows:
                    raise RuntimeError(f"the service stored {stored} of {rows} rows (Native insert)")

                latencies = []
                for _ in range(200):
                    _, seconds = _timed(lambda: client.command("SELECT 1"))
                    latencies.append(seconds)
                figures["small_request_ms_p50"] = float(np.median(latencies) * 1000)
                client.close()

            status.update("insert with chDB in process (for comparison)")
            seconds = _direct_chdb_insert(base, data)
            figures["direct_chdb_insert_rows_per_s"] = rows / seconds

    figures["insert_vs_direct_ratio"] = figures["insert_rows_per_s"] / figures["direct_chdb_insert_rows_per_s"]
    _print_table(console, figures)
    write_results("hotstore", figures, quick=quick)
    return figures


def _print_table(console: Console, f: dict[str, Any]) -> None:
    direct = f["direct_chdb_insert_rows_per_s"]
    table = Table(title=f"hot store, {f['rows']:,} telemetry rows")
    table.add_column("step")
    table.add_column("via service (clickhouse-connect)", justify="right")
    table.add_column("chDB in process", justify="right")
    table.add_column("service / direct", justify="right")
    table.add_row(
        "insert Arrow",
        f"{f['insert_rows_per_s']:,.0f} rows/s",
        f"{direct:,.0f} rows/s",
        f"{f['insert_vs_direct_ratio']:.2f}",
    )
    table.add_row(
        "insert Native (lz4)",
        f"{f['insert_native_rows_per_s']:,.0f} rows/s",
        f"{direct:,.0f} rows/s",
        f"{f['insert_native_rows_per_s'] / direct:.2f}",
    )
    table.add_row("query_arrow", f"{f['query_rows_per_s']:,.0f} rows/s", "-", "-")
    table.add_row("SELECT 1 latency (p50)", f"{f['small_request_ms_p50']:.2f} ms", "-", "-")
    table.add_row("round trip equal", "yes" if f["round_trip_equal"] else "[red]NO[/red]", "-", "-")
    console.print(table)
