"""A snapshot of the Dagster definition set: an accidental change to the graph shows up here."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from plantstream.assets.telemetry_silver import SILVER_SCHEMA, to_silver
from plantstream.orchestration.definitions import build_definitions
from plantstream.settings import load_settings


def test_asset_graph_runs_from_kafka_through_bronze_to_silver(tmp_path) -> None:
    graph = build_definitions(load_settings(state_dir=tmp_path)).resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {
        "kafka/factory_machine_telemetry",
        "kafka/factory_deadletter",
        "hotstore/telemetry_raw",
        "hotstore/telemetry_windows",
        "bronze/telemetry",
        "silver/telemetry",
    } <= keys
    silver = graph.get(dg.AssetKey(["silver", "telemetry"]))
    assert silver.parent_keys == {dg.AssetKey(["bronze", "telemetry"])}
    bronze = graph.get(dg.AssetKey(["bronze", "telemetry"]))
    assert bronze.parent_keys == {dg.AssetKey(["kafka", "factory_machine_telemetry"])}
    assert bronze.is_observable and not bronze.is_materializable
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default", f"{key} has no group"
        assert node.owners, f"{key} has no owner"
        assert node.description, f"{key} has no description"


def bronze_rows(rows: list[tuple[str, int, int]]) -> pa.Table:
    """Bronze-shaped rows: (machine_id, seq, kafka_offset)."""
    n = len(rows)
    return pa.table(
        {
            "site": ["plant-1"] * n,
            "area": ["a"] * n,
            "line": ["l"] * n,
            "machine_id": [r[0] for r in rows],
            "seq": [r[1] for r in rows],
            "signal": ["torque"] * n,
            "value": [float(r[1]) for r in rows],
            "unit": ["Nm"] * n,
            "quality": ["good"] * n,
            "source_ts": [1_700_000_000_000 + r[1] for r in rows],
            "read_ts": [1_700_000_000_005 + r[1] for r in rows],
            "ingest_ts": [1_700_000_000_010 + r[1] for r in rows],
            "event_ts": [1_700_000_000_000 + r[1] for r in rows],
            "kafka_partition": pa.array([0] * n, pa.int32()),
            "kafka_offset": [r[2] for r in rows],
        }
    )


def test_to_silver_keeps_the_first_copy_of_each_reading_and_types_it() -> None:
    silver = to_silver(bronze_rows([("m1", 0, 10), ("m1", 1, 11), ("m1", 0, 12), ("m2", 0, 13)]))
    assert silver.schema == SILVER_SCHEMA
    assert sorted(zip(silver["machine_id"].to_pylist(), silver["seq"].to_pylist(), strict=True)) == [
        ("m1", 0),
        ("m1", 1),
        ("m2", 0),
    ]
    first_m1 = [
        o
        for m, s, o in zip(*(silver[c].to_pylist() for c in ("machine_id", "seq", "kafka_offset")), strict=True)
        if (m, s) == ("m1", 0)
    ]
    assert first_m1 == [10]
    assert str(silver["event_time"][0].as_py().tzinfo) == "UTC"
