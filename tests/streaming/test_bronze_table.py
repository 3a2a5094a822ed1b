"""The bronze table exists before any flow member commits, whoever creates it first.

Two members whose first commits both created the table raced for Delta version 0; the
loser failed ("Metadata changed since last commit") and Bytewax aborted the process.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from deltalake import DeltaTable

from plantstream.connect.s3 import delta_storage_options, ensure_buckets
from plantstream.contract.columns import BRONZE_PARTITION_COLUMNS, bronze_schema
from plantstream.contract.streams import TELEMETRY_STREAM
from plantstream.settings import Settings
from plantstream.streaming.bronze_sink import bronze_uri, ensure_bronze_table

pytestmark = pytest.mark.integration


def _ensure(settings: Settings, start: Any) -> None:
    start.wait(60)
    ensure_bronze_table(settings, TELEMETRY_STREAM)


def test_processes_racing_to_create_the_bronze_table_all_succeed(stream_settings) -> None:
    settings = stream_settings()
    ensure_buckets(settings, [settings.lake.bucket])
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    racers = [ctx.Process(target=_ensure, args=(settings, start)) for _ in range(4)]
    for racer in racers:
        racer.start()
    start.set()  # released together, after their imports
    for racer in racers:
        racer.join(120)
    assert [r.exitcode for r in racers] == [0, 0, 0, 0]

    def table() -> DeltaTable:
        return DeltaTable(bronze_uri(settings, TELEMETRY_STREAM), storage_options=delta_storage_options(settings))

    # Racers may each commit the (identical) metadata; what matters is that none failed
    # and the table is the contract's.
    assert table().metadata().partition_columns == list(BRONZE_PARTITION_COLUMNS)
    assert table().schema().to_arrow().names == bronze_schema(TELEMETRY_STREAM).names
    version = table().version()
    ensure_bronze_table(settings, TELEMETRY_STREAM)  # on an existing table: nothing committed
    assert table().version() == version
