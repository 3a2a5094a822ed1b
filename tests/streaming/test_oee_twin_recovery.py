"""kill -9 while a simulated plant streams, restart, drain: live OEE and the twin are exact.

The plant (the simulator's engine: physics, failures, tool changes, planned downtime, hourly
shifts, every stream) is produced at a steady rate while a 2-process cluster of the plant
flow is SIGKILLed at random moments (after the hot store grew by a random share of the
telemetry) and restarted (``crash_harness``); then the flow drains.  Afterwards every final
shift row of ``oee_live`` (machines and lines) must equal a recomputation from the raw events
in the hot store, and every machine's twin must hold exactly its raw events' state: parts
counted once, the latest value of every signal, the latest state.
"""

from __future__ import annotations

import datetime as dt
import random
import time

import msgspec
import pytest
import yaml
from crash_harness import PacedProducer, hot_rows, kill_when
from oee_recompute import RawEvents, simulated_plant
from telemetry_flow_io import hot_arrow, read_topic

from plantstream.contract import Codec
from plantstream.contract.events import TwinState
from plantstream.contract.streams import stream_named
from plantstream.contract.topics import TWIN_STATE, message_key, topic_name
from plantstream.domain.shifts import ShiftCalendar
from plantstream.streaming.runner import prepare_flow, run_cluster

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def plant_doc(start_ms: int, machines: int) -> dict:
    kinds = ("cnc_mill", "press", "robot_cell", "conveyor")
    lines: dict[str, list] = {}
    for i in range(machines):
        lines.setdefault(f"line-{i // 4 + 1}", []).append({"id": f"m-{i + 1:02d}", "type": kinds[i % 4]})
    cleaning = dt.datetime.fromtimestamp((start_ms + 80 * 60_000) / 1000, dt.UTC).strftime("%H:%M")
    return {
        "name": "crash",
        "seed": 11,
        "sample_period_s": 10.0,
        "machine_types": {k: {"cycle_s": 30 + 5 * i} for i, k in enumerate(kinds)},
        "sites": {"plant-1": {"areas": {"machining": {"lines": {ln: {"machines": ms} for ln, ms in lines.items()}}}}},
        "shifts": [{"name": f"h{h:02d}", "start": f"{h:02d}:00", "end": f"{(h + 1) % 24:02d}:00"} for h in range(24)],
        "planned_downtime": [{"name": "cleaning", "start": cleaning, "duration_min": 15}],
    }


def _raw(settings) -> RawEvents:
    db = settings.hotstore.database
    ms = "toUnixTimestamp64Milli(event_ts) AS event_ms"
    tables = {
        "events": hot_arrow(
            settings, f"SELECT machine_id, seq, event_type, state, reason, {ms} FROM {db}.events_raw FINAL"
        ),
        "quality": hot_arrow(settings, f"SELECT machine_id, seq, result, {ms} FROM {db}.quality_raw FINAL"),
    }
    raw = RawEvents.of_tables(tables)
    for table in ("energy_raw", "telemetry_raw"):
        for row in hot_arrow(
            settings,
            f"SELECT machine_id, max(toUnixTimestamp64Milli(event_ts)) AS h FROM {db}.{table} GROUP BY machine_id",
        ).to_pylist():
            raw.horizon[row["machine_id"]] = max(raw.horizon.get(row["machine_id"], 0), row["h"])
    return raw


def test_kill_9_twice_while_the_plant_streams_then_resume_gives_exact_oee_and_twin(stream_settings, tmp_path) -> None:
    now = int(time.time() * 1000)
    start = (now - 3 * HOUR_MS - 20 * 60_000) // HOUR_MS * HOUR_MS
    doc = plant_doc(start, machines=12)
    plant, events = simulated_plant(doc, start, steps=3 * 360 + 60, telemetry=True, seed=5)
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(doc))
    settings = stream_settings(
        snapshot_interval_seconds=1.0, consumer_batch_size=2_000, bronze_flush_rows=5_000
    ).model_copy(update={"plant_file": str(path)})
    prepare_flow(settings)
    codecs: dict[type, Codec] = {}
    records = [
        (
            topic_name(settings, stream_named(stream).topic),
            message_key(e.machine_id),
            codecs.setdefault(type(e), Codec(type(e))).encode(e),
        )
        for stream, e in events
    ]
    telemetry = sum(1 for s, _ in events if s == "telemetry")
    db = settings.hotstore.database
    log_path = tmp_path / "flow.log"

    def grown() -> int:
        return hot_rows(settings, "telemetry_raw")

    rng = random.Random(19)
    feeder = PacedProducer(settings, records, rate=25_000)
    feeder.start()
    deadline = time.monotonic() + 150
    targets = [lambda: grown() + rng.randint(telemetry // 8, telemetry // 4) for _ in range(2)]
    kill_when(settings, grown, targets, processes=[2], log_path=log_path, deadline=deadline)
    feeder.join(max(1.0, deadline - time.monotonic()))
    assert feeder.done.is_set() and feeder.error is None, feeder.error
    run_cluster(
        settings, processes=2, stop_at_end=True, timeout_s=max(30.0, deadline - time.monotonic()), log_path=log_path
    )

    raw = _raw(settings)
    cycle = {m.machine_id: m.cycle_s for m in plant.machines()}
    line_of = {m.machine_id: m.line for m in plant.machines()}
    rows = hot_arrow(
        settings,
        f"SELECT scope, line, machine_id, toUnixTimestamp64Milli(window_start) AS ws, "
        f"toUnixTimestamp64Milli(window_end) AS we, final, machines, availability, performance, quality, oee, "
        f"run_s, planned_production_s, planned_stop_s, total_count, good_count, availability_loss_s "
        f"FROM {db}.oee_live FINAL WHERE window_kind = 'shift' AND final = 1",
    ).to_pylist()
    shifts = {(r["ws"], r["we"]) for r in rows}
    assert len(shifts) >= 2, f"at least two shifts closed: {sorted(shifts)}"
    machine_rows = [r for r in rows if r["scope"] == "machine"]
    for ws, we in shifts:
        with_data = {m for m in cycle if raw.machine_oee(m, ws, we, cycle[m]) is not None}
        assert {r["machine_id"] for r in machine_rows if r["ws"] == ws} == with_data
    planned = 0.0
    for r in rows:
        if r["scope"] == "machine":
            expected = raw.machine_oee(r["machine_id"], r["ws"], r["we"], cycle[r["machine_id"]])
        else:
            members = {m: cycle[m] for m in cycle if line_of[m] == r["line"]}
            expected = raw.line_oee(members, r["ws"], r["we"])
        where = (r["scope"], r["machine_id"] or r["line"], r["ws"])
        assert (r["total_count"], r["good_count"]) == (expected.total_count, expected.good_count), where
        assert r["run_s"] == pytest.approx(expected.run_s) and r["planned_stop_s"] == pytest.approx(
            expected.planned_stop_s
        )
        assert dict(r["availability_loss_s"]) == pytest.approx(expected.availability_loss_s), where
        for name in ("availability", "performance", "quality", "oee"):
            assert r[name] == pytest.approx(getattr(expected, name)), (where, name)
        planned += r["planned_stop_s"]
    assert planned > 0, "the planned downtime fell into a closed shift"

    # the twin of every machine: exactly its raw events' state
    twins = {
        r["machine_id"]: r
        for r in hot_arrow(
            settings,
            f"SELECT machine_id, version, state, parts_total, parts_good, signal_value, document "
            f"FROM {db}.twin_state FINAL",
        ).to_pylist()
    }
    assert set(twins) == set(cycle)
    last_values = hot_arrow(
        settings,
        f"SELECT machine_id, signal, argMax(value, (event_ts, seq)) AS v FROM {db}.telemetry_raw FINAL "
        f"GROUP BY machine_id, signal",
    ).to_pylist()
    calendar = ShiftCalendar.of_plant(plant)
    for machine, twin in twins.items():
        state = msgspec.json.decode(twin["document"], type=TwinState)
        assert state.state == max(raw.states[machine])[2]
        current = calendar.at(state.source_ts)[-1]
        parts = [good for ts, good in raw.parts[machine] if current.contains(ts)]
        assert (twin["parts_total"], twin["parts_good"]) == (len(parts), sum(parts)), machine
    for row in last_values:
        assert dict(twins[row["machine_id"]]["signal_value"])[row["signal"]] == row["v"], row
    latest: dict[bytes, int] = {}
    for record in read_topic(settings, topic_name(settings, TWIN_STATE)):
        seq = msgspec.json.decode(record.value(), type=TwinState).seq
        latest[record.key()] = max(latest.get(record.key(), -1), seq)
    assert latest == {m.encode(): t["version"] for m, t in twins.items()}, "topic and table agree on the newest"
