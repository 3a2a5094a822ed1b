"""Live OEE and the digital twin through the real flow: Kafka in, hot store and twin topic out.

The plant flow runs in drain mode on the session platform (real broker, chDB hot store,
SeaweedFS); every figure asserted here is read back from the hot store (``oee_live FINAL``,
``twin_state FINAL``) or the twin topic.
"""

from __future__ import annotations

import msgspec
import pytest
from branch_events import MINUTE_MS, Plant, day_ms, plant_file
from telemetry_flow_io import hot_arrow, read_topic
from test_oee_live import t, worked_example

from plantstream.connect.kafka import producer
from plantstream.contract.events import AlertAction, AlertType, Severity, TwinState
from plantstream.contract.streams import stream_named
from plantstream.contract.topics import ALERTS, TWIN_STATE, topic_name
from plantstream.streaming.runner import prepare_flow, run_flow
from plantstream.streaming.twin_query import machine_twin

pytestmark = pytest.mark.integration


def produce_plant(settings, plant: Plant) -> None:
    prepare_flow(settings)
    p = producer(settings)
    errors = []
    for stream, key, value in plant.payloads():
        topic = topic_name(settings, ALERTS if stream == "alerts" else stream_named(stream).topic)
        p.produce(topic, value, key, on_delivery=lambda err, _m: errors.append(err) if err else None)
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors


def test_a_closed_shift_in_the_hot_store_is_final_exact_and_the_edge_cases_are_stored_as_they_are(
    stream_settings, tmp_path
) -> None:
    assert t(0) == day_ms(1)
    machines = {
        "mill-1": ("cnc_mill", "line-1", 30.0),
        "press-2": ("press", "line-1", 30.0),  # no run time: a failure all shift
        "robot-3": ("robot_cell", "line-2", 60.0),  # performance > 1: the plant file's cycle is too long
        "belt-4": ("conveyor", "line-3", 30.0),  # planned downtime covering the whole shift
    }
    path = plant_file(tmp_path, machines, [{"name": "day", "start": "06:00", "end": "14:00"}])
    settings = stream_settings().model_copy(update={"plant_file": path})
    plant = Plant(lines={m: line for m, (_, line, _) in machines.items()})
    worked_example(plant, "mill-1")
    plant.state("press-2", t(5), "stopped", "failure:PWF")
    plant.state("robot-3", t(5), "running")
    for k in range(int(9 * 3600 / 30)):
        plant.part("robot-3", t(5, 0, 15) + k * 30_000)
    plant.state("belt-4", t(5), "maintenance", "planned:overhaul")
    for m in machines:
        for k in range(9 * 60 + 31):
            plant.energy(m, t(5) + k * MINUTE_MS, kwh=float(k))
            plant.reading(m, t(5) + k * MINUTE_MS, "vibration", 1.0 + k % 5)
    plant.alert(
        "mill-1",
        t(10),
        alert_type=AlertType.ANOMALY_DETECTED,
        severity=Severity.CRITICAL,
        message="torque above its limit",
        alert_id="a-1",
        action=AlertAction.RAISE,
        raised_at=t(10),
        signal="torque",
        kind="limit",
    )
    produce_plant(settings, plant)
    run_flow(settings, stop_at_end=True)

    db = settings.hotstore.database
    rows = hot_arrow(
        settings,
        f"SELECT scope, machine_id, line, final, machines, availability, performance, quality, oee, run_s, "
        f"planned_production_s, total_count, good_count, nothing_planned, performance_above_one, "
        f"availability_loss_s, planned_stop_by_reason_s, unknown_s, toUnixTimestamp64Milli(as_of) AS as_of "
        f"FROM {db}.oee_live FINAL WHERE window_kind = 'shift' ORDER BY scope, line, machine_id",
    ).to_pylist()
    by = {(r["scope"], r["machine_id"] or r["line"]): r for r in rows}
    assert all(r["final"] == 1 and r["as_of"] == t(14) for r in rows), "the closed shift's rows are final"
    mill = by["machine", "mill-1"]
    assert mill["availability"] == pytest.approx(0.90) and mill["performance"] == pytest.approx(8 / 9)
    assert mill["quality"] == pytest.approx(0.95) and mill["oee"] == pytest.approx(0.76)
    assert (mill["total_count"], mill["good_count"], mill["run_s"], mill["unknown_s"]) == (720, 684, 24_300, 0)
    assert dict(mill["availability_loss_s"]) == {"failure:TWF": 2_400.0, "starved": 300.0}
    assert dict(mill["planned_stop_by_reason_s"]) == {"planned:cleaning": 1_800.0}
    press = by["machine", "press-2"]
    assert press["availability"] == 0.0 and press["performance"] is None and press["oee"] == 0.0
    robot = by["machine", "robot-3"]
    assert robot["performance"] == pytest.approx(2.0) and robot["performance_above_one"] == 1
    assert robot["oee"] == pytest.approx(2.0)
    belt = by["machine", "belt-4"]
    assert belt["nothing_planned"] == 1 and belt["availability"] is belt["oee"] is None
    line = by["line", "line-1"]
    assert line["machines"] == 2 and line["planned_production_s"] == 27_000 + 28_800
    assert line["oee"] == pytest.approx(30 * 684 / (27_000 + 28_800)), "combine: fully productive / planned"

    twin = machine_twin(settings, "mill-1")
    assert twin is not None
    assert (twin["state"], twin["reason"]) == ("stopped", "off_shift")
    assert (twin["shift"], twin["parts_total"], twin["parts_good"], twin["parts_scrap"]) == ("day", 720, 684, 36)
    assert twin["oee"]["final"] and twin["oee"]["oee"] == pytest.approx(0.76)
    assert [a["alert_id"] for a in twin["open_alerts"]] == ["a-1"]
    assert twin["energy_kwh"] == 570.0
    assert twin["signals"]["vibration"]["value"] == 1.0 + 570 % 5
    # yesterday's readings: the twin's last state is kept, and shown stale by the reader's clock
    assert twin["stale"] and twin["signals"]["vibration"]["stale"] and twin["age_s"] > 3600

    records = read_topic(settings, topic_name(settings, TWIN_STATE))
    latest: dict[bytes, TwinState] = {}
    for record in records:
        state = msgspec.json.decode(record.value(), type=TwinState)
        assert record.key() == state.machine_id.encode()
        if record.key() not in latest or latest[record.key()].seq < state.seq:
            latest[record.key()] = state
    assert set(latest) == {m.encode() for m in machines}
    assert latest[b"mill-1"].seq == twin["version"] and latest[b"mill-1"].parts_total == 720
