"""Inserts: compressed multi-frame bodies, Arrow, concurrency, dedup tokens."""

from __future__ import annotations

import base64
import gzip
import io
import threading
import urllib.request

import lz4.frame
import numpy as np
import pyarrow as pa
import pytest
import zstandard
from clickhouse_connect.driver.client import Client
from hotstore_process import HotstoreProcess

DDL = "CREATE TABLE {table} (seq UInt64, machine LowCardinality(String), value Float64) ENGINE = MergeTree ORDER BY seq"


def _columns(rows: int, offset: int = 0) -> list:
    seq = np.arange(offset, offset + rows, dtype=np.uint64)
    return [seq, [f"m{i % 13}" for i in range(rows)], (seq % 1000).astype(np.float64) / 8]


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compressed_multi_block_insert_keeps_every_row(
    hotstore: HotstoreProcess, database: str, compression: str
) -> None:
    rows = 350_000  # clickhouse-connect sends ~65k-row blocks, each compressed as its own frame
    client = hotstore.client(compress=compression)
    try:
        table = f"{database}.big"
        client.command(DDL.format(table=table))
        summary = client.insert(table, _columns(rows), column_names=["seq", "machine", "value"], column_oriented=True)
        assert summary.written_rows == rows
        assert client.command(f"SELECT count(), sum(seq), uniqExact(machine) FROM {table}") == [
            str(rows),
            str(rows * (rows - 1) // 2),
            "13",
        ]
    finally:
        client.close()


@pytest.mark.parametrize("encoding", ["lz4", "zstd", "gzip"])
def test_raw_body_of_concatenated_frames(
    hotstore: HotstoreProcess, client: Client, database: str, encoding: str
) -> None:
    """Each frame holds part of the CSV; losing any frame would lose rows."""
    client.command(f"CREATE TABLE {database}.raw (a UInt32) ENGINE = MergeTree ORDER BY a")
    parts = ["".join(f"{i}\n" for i in range(start, start + 1000)).encode() for start in range(0, 5000, 1000)]
    compress = {
        "lz4": lz4.frame.compress,
        "zstd": zstandard.ZstdCompressor().compress,
        "gzip": gzip.compress,
    }[encoding]
    body = f"INSERT INTO {database}.raw FORMAT CSV\n".encode()
    frames = compress(body + parts[0]) + b"".join(compress(p) for p in parts[1:])
    request = urllib.request.Request(f"{hotstore.url}/", data=frames, method="POST")
    token = base64.b64encode(f"{hotstore.username}:{hotstore.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Encoding", encoding)
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
    assert client.command(f"SELECT count(), sum(a) FROM {database}.raw") == ["5000", str(5000 * 4999 // 2)]


def test_insert_arrow_round_trip(client: Client, database: str) -> None:
    table = f"{database}.arrow"
    client.command(
        f"CREATE TABLE {table} (ts DateTime64(3, 'UTC'), machine LowCardinality(String), "
        "value Nullable(Float64), seq UInt64) ENGINE = MergeTree ORDER BY seq"
    )
    n = 50_000
    data = pa.table(
        {
            "ts": pa.array(np.arange(n, dtype=np.int64) * 1000 + 1_767_225_600_000, pa.timestamp("ms", tz="UTC")),
            "machine": pa.array([f"press-{i % 7}" for i in range(n)]),
            "value": pa.array([None if i % 11 == 0 else i / 3 for i in range(n)], pa.float64()),
            "seq": pa.array(np.arange(n, dtype=np.uint64)),
        }
    )
    client.insert_arrow(table, data)
    back = client.query_arrow(f"SELECT ts, machine, value, seq FROM {table} ORDER BY seq")
    assert back.num_rows == n
    for name in ("ts", "value", "seq"):
        assert back.column(name).to_pylist() == data.column(name).to_pylist(), name
    assert back.column("machine").to_pylist() == data.column("machine").to_pylist()


def test_concurrent_clients_every_count_exact(hotstore: HotstoreProcess, client: Client, database: str) -> None:
    table = f"{database}.conc"
    client.command(f"CREATE TABLE {table} (worker UInt8, round UInt16, i UInt32) ENGINE = MergeTree ORDER BY worker")
    workers, rounds = 4, 20
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        own = hotstore.client()
        try:
            for r in range(rounds):
                rows = [[worker, r, i] for i in range(100 + r)]
                own.insert(table, rows, column_names=["worker", "round", "i"])
                expected = sum(100 + k for k in range(r + 1))
                got = own.command(f"SELECT count() FROM {table} WHERE worker = {worker}")
                assert got == expected, (worker, r, got, expected)
        except BaseException as exc:
            failures.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures
    assert client.command(f"SELECT count() FROM {table}") == workers * sum(100 + k for k in range(rounds))


def test_dedup_token_drops_a_repeated_insert(client: Client, database: str) -> None:
    table = f"{database}.dedup"
    client.command(
        f"CREATE TABLE {table} (a UInt64) ENGINE = MergeTree ORDER BY a "
        "SETTINGS non_replicated_deduplication_window = 100"
    )
    rows = [[i] for i in range(10)]
    for _ in range(2):
        client.insert(table, rows, column_names=["a"], settings={"insert_deduplication_token": "batch-0001"})
    assert client.command(f"SELECT count() FROM {table}") == 10
    client.insert(table, rows, column_names=["a"], settings={"insert_deduplication_token": "batch-0002"})
    assert client.command(f"SELECT count() FROM {table}") == 20


def test_arrow_bytes_survive_arbitrary_split(client: Client, database: str) -> None:
    """insert_arrow sends an Arrow IPC *file*; check a raw one too, via the query= parameter path."""
    table = f"{database}.arrow_raw"
    client.command(f"CREATE TABLE {table} (a UInt64) ENGINE = MergeTree ORDER BY a")
    data = pa.table({"a": pa.array(np.arange(1000, dtype=np.uint64))})
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, data.schema) as writer:
        writer.write_table(data)
    client.raw_insert(table, None, sink.getvalue(), fmt="Arrow")
    assert client.command(f"SELECT count(), sum(a) FROM {table}") == ["1000", str(999 * 1000 // 2)]


@pytest.mark.slow
@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_insert_larger_than_the_prebuffer_streams_into_chdb(
    hotstore: HotstoreProcess, database: str, compression: str
) -> None:
    """~120 MB of Native data: past the 64 MiB read-ahead, the rest is streamed under the lock."""
    rows = 4_000_000
    client = hotstore.client(compress=compression)
    other = hotstore.client()
    try:
        table = f"{database}.huge"
        client.command(DDL.format(table=table))
        seq = np.arange(rows, dtype=np.uint64)
        machine = np.array([f"machine-{i:04d}" for i in range(1000)], dtype=object)[seq % 1000]
        data = [seq, machine, seq.astype(np.float64)]
        summary = client.insert(table, data, column_names=["seq", "machine", "value"], column_oriented=True)
        assert summary.written_rows == rows
        assert client.command(f"SELECT count(), sum(seq), uniqExact(machine) FROM {table}") == [
            str(rows),
            str(rows * (rows - 1) // 2),
            "1000",
        ]
        assert other.command("SELECT 1") == 1  # the service is still serving others
    finally:
        client.close()
        other.close()
