"""A snapshot of the Dagster definition set: an accidental change to the graph shows up here."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa

from plantstream.assets.silver import silver_schema, to_silver
from plantstream.contract.streams import STREAMS, TELEMETRY_STREAM
from plantstream.orchestration.definitions import build_definitions
from plantstream.settings import load_settings


def test_asset_graph_runs_from_kafka_through_bronze_to_silver(tmp_path) -> None:
    graph = build_definitions(load_settings(state_dir=tmp_path)).resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"kafka/factory_deadletter", "hotstore/telemetry_windows"} <= keys
    for spec in STREAMS:  # every stream: topic -> hot table, topic -> bronze -> silver
        topic = "kafka/" + spec.topic.name.replace(".", "_")
        assert {topic, f"hotstore/{spec.hot_table}", f"bronze/{spec.name}", f"silver/{spec.name}"} <= keys
        silver = graph.get(dg.AssetKey(["silver", spec.name]))
        assert silver.parent_keys == {dg.AssetKey(["bronze", spec.name])}
        bronze = graph.get(dg.AssetKey(["bronze", spec.name]))
        assert bronze.parent_keys == {dg.AssetKey(topic.split("/"))}
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
    batch = to_silver(TELEMETRY_STREAM, bronze_rows([("m1", 0, 10), ("m1", 1, 11), ("m1", 0, 12), ("m2", 0, 13)]))
    silver = batch.rows
    assert silver.schema == silver_schema(TELEMETRY_STREAM)
    assert batch.conflicts == 0  # the later copy of (m1, 0) is identical: a re-send, not a conflict
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


def test_to_silver_counts_a_conflicting_duplicate_and_keeps_the_first_copy() -> None:
    rows = bronze_rows([("m1", 0, 10), ("m1", 0, 12), ("m2", 0, 13)])
    # The copy at offset 12 says another value for the same (machine, seq): a device bug.
    rows = rows.set_column(rows.schema.get_field_index("value"), "value", pa.array([1.0, 99.0, 2.0]))
    batch = to_silver(TELEMETRY_STREAM, rows)
    assert batch.conflicts == 1
    assert batch.conflict_sample == [{"machine_id": "m1", "seq": 0, "versions": 2}]
    kept = {
        (m, s): v for m, s, v in zip(*(batch.rows[c].to_pylist() for c in ("machine_id", "seq", "value")), strict=True)
    }
    assert kept == {("m1", 0): 1.0, ("m2", 0): 2.0}
