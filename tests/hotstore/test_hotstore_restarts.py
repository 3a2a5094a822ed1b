"""Lifecycle: ready line, clean SIGTERM, data kept across restarts and kill -9, one owner per data dir."""

from __future__ import annotations

import subprocess
import sys

from hotstore_process import HotstoreProcess

DEDUP_DDL = (
    "CREATE TABLE IF NOT EXISTS replay (a UInt64) ENGINE = MergeTree ORDER BY a "
    "SETTINGS non_replicated_deduplication_window = 100"
)


def test_ready_line_and_clean_sigterm(hotstore_factory: HotstoreProcess) -> None:
    hotstore_factory.start()
    assert hotstore_factory.ready_line() == f"hotstore ready on {hotstore_factory.url}\n"
    client = hotstore_factory.client()
    assert client.command("SELECT timezone()") == "UTC"  # although the test environment says Europe/Berlin
    # The client's keep-alive connection stays open: an idle connection must not delay shutdown.
    code, seconds = hotstore_factory.stop()
    client.close()
    assert code == 0
    assert seconds < 2.5


def test_dedup_token_holds_across_restart(hotstore_factory: HotstoreProcess) -> None:
    rows = [[i] for i in range(25)]
    hotstore_factory.start()
    client = hotstore_factory.client()
    client.command(DEDUP_DDL)
    client.insert("replay", rows, column_names=["a"], settings={"insert_deduplication_token": "replay-7"})
    client.close()
    assert hotstore_factory.stop()[0] == 0

    hotstore_factory.start()
    client = hotstore_factory.client()
    client.insert("replay", rows, column_names=["a"], settings={"insert_deduplication_token": "replay-7"})
    assert client.command("SELECT count() FROM replay") == 25
    client.close()


def test_data_survives_kill_9(hotstore_factory: HotstoreProcess) -> None:
    hotstore_factory.start()
    client = hotstore_factory.client()
    client.command("CREATE TABLE durable (a UInt64, s String) ENGINE = MergeTree ORDER BY a")
    client.insert("durable", [[i, f"r{i}"] for i in range(1000)], column_names=["a", "s"])
    client.command("CREATE DATABASE keep")
    client.close()
    hotstore_factory.kill()

    hotstore_factory.start()
    client = hotstore_factory.client()
    assert client.command("SELECT count(), sum(a), max(s) FROM durable") == ["1000", "499500", "r999"]
    assert client.command("EXISTS DATABASE keep") == 1
    client.close()


def test_second_owner_of_a_data_dir_is_refused(hotstore_factory: HotstoreProcess) -> None:
    hotstore_factory.start()
    cmd = [sys.executable, "-m", "plantstream.services.hotstore", "--data-dir", str(hotstore_factory.data_dir)]
    second = subprocess.run(
        [*cmd, "--port", "0"],
        env=hotstore_factory.env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 2
    assert b"Code: 76" in second.stderr
    assert hotstore_factory.client().command("SELECT 1") == 1  # the owner is unaffected
