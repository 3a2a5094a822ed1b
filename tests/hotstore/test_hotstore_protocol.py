"""The HTTP protocol as clickhouse-connect uses it: handshake, queries, parameters, errors, auth."""

from __future__ import annotations

import base64
import json
import statistics
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal

import clickhouse_connect
import pyarrow as pa
import pytest
from clickhouse_connect.driver.binding import use_form_encoding
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError
from hotstore_process import HotstoreProcess

TYPES_DDL = """
CREATE TABLE {db}.readings (
    ts DateTime64(3, 'UTC'),
    machine LowCardinality(String),
    value Nullable(Float64),
    seq UInt64
) ENGINE = MergeTree ORDER BY seq
"""
ROWS = [
    (datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "press-1", 1.25, 0),
    (datetime(2026, 1, 2, 3, 4, 6, 1000, tzinfo=UTC), "press-2", None, 1),
    (datetime(1999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC), "lathe-\u00e9", -0.5, 18_446_744_073_709_551_615),
]


def _http(hotstore: HotstoreProcess, sql: str, *, auth: tuple[str, str] | bool | None = True):
    if auth is True:
        auth = (hotstore.username, hotstore.password)
    request = urllib.request.Request(f"{hotstore.url}/", data=sql.encode(), method="POST")
    if isinstance(auth, tuple):
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_ping(hotstore: HotstoreProcess, client: Client) -> None:
    assert client.ping()
    with urllib.request.urlopen(f"{hotstore.url}/ping", timeout=5) as resp:
        assert resp.read() == b"Ok.\n"


def test_handshake_reports_version_and_utc(client: Client) -> None:
    assert client.server_version.split(".")[0].isdigit()
    assert str(client.server_tz) == "UTC"
    assert client.command("SELECT timezone()") == "UTC"
    assert client.command("SELECT toString(toDateTime(0))") == "1970-01-01 00:00:00"


def test_command_values_and_summary(client: Client, database: str) -> None:
    assert client.command("SELECT 1") == 1
    assert client.command("SELECT 'a', 2") == ["a", "2"]
    assert client.command("SELECT 1 WHERE 0") == ""
    client.command(f"CREATE TABLE {database}.c (a UInt8) ENGINE = MergeTree ORDER BY a")
    summary = client.command(f"INSERT INTO {database}.c SELECT number FROM numbers(7)")
    assert summary.written_rows == 7
    assert client.command(f"SELECT count() FROM {database}.c") == 7


def test_round_trip_of_real_types(client: Client, database: str) -> None:
    client.command(TYPES_DDL.format(db=database))
    client.insert(f"{database}.readings", ROWS, column_names=["ts", "machine", "value", "seq"])
    sql = f"SELECT ts, machine, value, seq FROM {database}.readings ORDER BY seq"

    result = client.query(sql)
    assert [t.name for t in result.column_types] == [
        "DateTime64(3, 'UTC')",
        "LowCardinality(String)",
        "Nullable(Float64)",
        "UInt64",
    ]
    assert [(r[0].replace(tzinfo=UTC), *r[1:]) for r in result.result_rows] == ROWS

    df = client.query_df(sql)
    assert list(df.columns) == ["ts", "machine", "value", "seq"]
    assert df["machine"].tolist() == [r[1] for r in ROWS]
    assert df["value"].isna().tolist() == [False, True, False]
    assert df["seq"].tolist() == [r[3] for r in ROWS]
    assert [ts.to_pydatetime().replace(tzinfo=UTC) for ts in df["ts"]] == [r[0] for r in ROWS]

    table = client.query_arrow(sql)
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("seq").type == pa.uint64()
    assert table.column("value").to_pylist() == [r[2] for r in ROWS]
    assert table.column("ts").to_pylist() == [r[0] for r in ROWS]

    with client.query_arrow_stream(sql) as stream:
        batches = list(stream)
    assert sum(b.num_rows for b in batches) == len(ROWS)
    assert pa.Table.from_batches(batches).column("seq").to_pylist() == [r[3] for r in ROWS]


def test_parameters_in_url_and_in_multipart_form(client: Client) -> None:
    small = {"s": "it's\ta \\ test", "n": 42, "d": Decimal("1.5")}
    row = client.query("SELECT {s:String}, {n:UInt64}, {d:Decimal(10, 2)}", parameters=small).first_row
    assert row == (small["s"], 42, Decimal("1.50"))

    big = "é'\\\t" * 2_000  # > 4 KiB: the client switches to multipart/form-data
    assert use_form_encoding("SELECT {big:String}", {"param_big": big})
    assert client.query("SELECT {big:String}, lengthUTF8({big:String})", parameters={"big": big}).first_row == (
        big,
        len(big),
    )


def test_empty_native_result_carries_names_and_types(client: Client, database: str) -> None:
    client.command(TYPES_DDL.format(db=database))
    sql = f"SELECT ts, machine, value, seq FROM {database}.readings WHERE seq > 10"
    result = client.query(sql)
    assert result.result_rows == []
    assert result.column_names == ("ts", "machine", "value", "seq")
    assert [t.name for t in result.column_types][1:] == ["LowCardinality(String)", "Nullable(Float64)", "UInt64"]
    assert client.query_np(sql).shape == (0, 4)
    # clickhouse-connect's query_df drops columns without values (a (0, 0) frame even from a real
    # ClickHouse server); the Arrow-backed frame keeps them.
    df = client.query_df_arrow(sql)
    assert df.shape == (0, 4) and list(df.columns) == ["ts", "machine", "value", "seq"]


def test_unknown_table_raises_clickhouse_error(hotstore: HotstoreProcess, client: Client) -> None:
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT * FROM no_such_table_here")
    assert "UNKNOWN_TABLE" in str(info.value)
    assert "Code: 60. DB::Exception" in str(info.value)

    status, headers, body = _http(hotstore, "SELECT * FROM no_such_table_here")
    assert status == 404
    assert headers["X-ClickHouse-Exception-Code"] == "60"
    assert body.startswith(b"Code: 60. DB::Exception:") and b"(UNKNOWN_TABLE)" in body

    status, headers, body = _http(hotstore, "SELEC 1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    assert b"(SYNTAX_ERROR)" in body
    # The connection stays usable after errors.
    assert client.command("SELECT 2") == 2


def test_session_settings_and_database_do_not_leak(client: Client, hotstore: HotstoreProcess) -> None:
    other = hotstore.client()
    try:
        baseline = other.command("SELECT getSetting('max_block_size')")
        client.command("SET max_block_size = 4321")
        assert client.command("SELECT getSetting('max_block_size')") == 4321
        assert other.command("SELECT getSetting('max_block_size')") == baseline

        client.command("CREATE DATABASE IF NOT EXISTS session_db")
        client.command("USE session_db")
        assert client.command("SELECT currentDatabase()") == "session_db"
        assert other.command("SELECT currentDatabase()") == "default"
        # Still set after the other client ran statements in between.
        assert client.command("SELECT getSetting('max_block_size')") == 4321
        # A per-query setting applies to that query only.
        assert other.command("SELECT getSetting('max_block_size')", settings={"max_block_size": 777}) == 777
        assert other.command("SELECT getSetting('max_block_size')") == baseline
        assert client.command("SELECT getSetting('max_block_size')") == 4321
    finally:
        other.close()


def test_database_parameter_selects_database(hotstore: HotstoreProcess, client: Client, database: str) -> None:
    scoped = hotstore.client(database=database)
    try:
        assert scoped.command("SELECT currentDatabase()") == database
        assert client.command("SELECT currentDatabase()") == "default"
    finally:
        scoped.close()


def test_wrong_password_is_rejected(hotstore: HotstoreProcess) -> None:
    with pytest.raises(DatabaseError) as info:
        clickhouse_connect.get_client(
            host=hotstore.host, port=hotstore.port, username=hotstore.username, password="wrong"
        )
    assert "AUTHENTICATION_FAILED" in str(info.value)
    assert "Code: 516" in str(info.value)

    status, headers, body = _http(hotstore, "SELECT 1", auth=None)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "516")
    status, _, body = _http(hotstore, "SELECT 1", auth=(hotstore.username, hotstore.password))
    assert (status, body) == (200, b"1\n")


def test_secret_never_in_log(hotstore: HotstoreProcess) -> None:
    _http(hotstore, "SELECT 1", auth=(hotstore.username, "wrong-" + hotstore.password))
    assert hotstore.password not in hotstore.log_path.read_text()


def test_small_requests_are_fast(client: Client) -> None:
    """TCP_NODELAY + keep-alive: without them each request costs ~40 ms (Nagle + delayed ACK)."""
    durations = []
    for _ in range(40):
        started = time.perf_counter()
        client.command("SELECT 1")
        durations.append(time.perf_counter() - started)
    assert statistics.median(durations) < 0.015


def test_metrics(hotstore: HotstoreProcess, client: Client, database: str) -> None:
    client.command(f"CREATE TABLE {database}.m (a UInt64) ENGINE = MergeTree ORDER BY a")
    client.insert(f"{database}.m", [[i] for i in range(123)], column_names=["a"])
    with pytest.raises(DatabaseError):
        client.command("SELECT * FROM no_such_table_here")
    with urllib.request.urlopen(f"{hotstore.metrics_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/plain")
    with urllib.request.urlopen(f"{hotstore.metrics_url}/healthz", timeout=5) as resp:
        assert json.loads(resp.read())["ok"] is True
    # Not on the ClickHouse port (a ClickHouse server has none there either).
    with pytest.raises(urllib.error.HTTPError) as not_there:
        urllib.request.urlopen(f"{hotstore.url}/metrics", timeout=5)
    assert not_there.value.code == 404
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values['plantstream_hotstore_requests_total{kind="insert"}'] >= 1
    assert values['plantstream_hotstore_requests_total{kind="query"}'] >= 3
    assert values['plantstream_hotstore_request_errors_total{kind="query"}'] >= 1
    assert values["plantstream_hotstore_inserted_rows_total"] >= 123
    assert values['plantstream_hotstore_request_duration_seconds_count{kind="query"}'] >= 3
