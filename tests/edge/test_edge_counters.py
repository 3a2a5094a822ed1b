"""Part counters through the real protocols: roll-over, a controller reset and ``kill -9`` of
the gateway right as counters move, with no part counted twice or lost.

The shipped plant is served over OPC UA, MQTT and Modbus with short cycles (a part every
few seconds per machine).  An OPC UA machine and a Modbus machine start their counters two
parts below the PackML roll-over (2^31), so they roll over during the run; two others
restart their controller (counters back to 0) mid-run.  The gateway is a real process and
is killed with ``kill -9`` three times, each time the moment the plant has completed a
part (while the gateway is reading or recording the new counter values).

At the end the quality topic holds each part the plant made once, with its result, machine
by machine, against the simulator's ground truth.  The one allowed difference is the limit
of counters themselves: a part completed between the gateway's last read and a controller
reset is invisible to any reader of counters (the reset wipes it before it is read), so a
reset machine may miss the parts of that last read interval - never more, never a
duplicate.  The machine events follow the plant's state changes.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from edge_peers import GatewayProcess, read_topic

from plantstream.connect.topics import ensure_topics
from plantstream.contract import MachineEvent, MachineEventType, QualityMetric
from plantstream.contract.machine_tags import COUNTER_MODULUS
from plantstream.contract.topics import MACHINE_EVENTS, QUALITY_METRICS, topic_name
from plantstream.edge.gateway import BUFFER_FILE, edge_dir
from plantstream.services.isolated import pick_free_port
from plantstream.simulator.engine import Snapshot
from plantstream.simulator.ground_truth import read_ground_truth
from plantstream.simulator.plant_config import FaultConfig, PlantConfig, ScheduledFault, load_plant
from plantstream.simulator.serve import serve_in_thread

pytestmark = pytest.mark.integration

ROLL_OVER = {"cnc-mill-001": "opcua", "press-002": "modbus"}
RESET_AT_S = {"conveyor-004": 11.0, "cnc-mill-005": 17.0}  # simulated seconds after the start
CYCLE_S = 4.0
RUN_S = 32.0
KILLS = 3
READ_INTERVAL_MS = 1_000  # every endpoint of the shipped plant is read once a second
TIMEOUT_S = 90.0
STATE_CHANGES = {
    MachineEventType.MACHINE_STARTED,
    MachineEventType.MACHINE_STOPPED,
    MachineEventType.MAINTENANCE_STARTED,
    MachineEventType.MAINTENANCE_ENDED,
}


def _plant() -> PlantConfig:
    data = load_plant().model_dump(mode="json")
    for kind in data["machine_types"].values():
        kind["cycle_s"] = CYCLE_S
    for site in data["sites"].values():
        for area in site["areas"].values():
            for line in area["lines"].values():
                for machine in line["machines"]:
                    if machine["id"] in ROLL_OVER:
                        machine["counter_start"] = COUNTER_MODULUS - 2
    data["planned_downtime"] = []  # the run must not depend on the time of day
    plant = PlantConfig.model_validate(data)
    resets = [ScheduledFault(at_s=at, machine=m, kind="counter_reset") for m, at in RESET_AT_S.items()]
    plant = plant.with_faults(FaultConfig(scheduled=resets))  # and no random faults
    return plant.with_endpoint_ports({name: pick_free_port() for name in plant.endpoints})


def _memory(settings: Any) -> dict[str, dict]:
    """The gateway's persisted per-machine memory (read from its buffer file)."""
    path = edge_dir(settings) / BUFFER_FILE
    if not path.exists():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        try:
            return {m: json.loads(j) for m, j in conn.execute("SELECT machine_id, memory FROM machine_memory")}
        except sqlite3.OperationalError:  # not created yet
            return {}


def _buffered(settings: Any) -> int:
    with sqlite3.connect(f"file:{edge_dir(settings) / BUFFER_FILE}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]


def _wait(condition, what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _read_all(settings: Any, machines: list[str], since_ms: int) -> bool:
    memory = _memory(settings)
    return all((memory.get(m) or {}).get("status_read_ts", -1) >= since_ms for m in machines)


def test_counters_roll_over_reset_and_survive_kill9_without_double_counting(stream_settings, tmp_path: Path) -> None:
    settings = stream_settings()
    ensure_topics(settings)
    plant = _plant()
    machines = [m.machine_id for m in plant.machines()]
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(plant.gateway_config()))
    part_made = threading.Event()
    counters: dict[str, list[int]] = defaultdict(list)

    def watch(snapshot: Snapshot) -> None:
        if snapshot.parts:
            part_made.set()
        for reading in snapshot.readings:
            counters[reading.machine.machine_id].append(reading.status.parts_processed)

    gateway = GatewayProcess(settings, config, tmp_path / "gateway.log")
    with serve_in_thread(plant, tmp_path / "plant", faults=True, on_snapshot=watch, held=True) as running:
        gateway.start()
        try:
            _wait(lambda: _read_all(settings, machines, 0), "the gateway to read every machine once")
            assert running.server.last is not None
            baseline_ts = running.server.last.ts
            running.resume()
            for kill in range(1, KILLS + 1):
                _wait(
                    lambda k=kill: running.server.last.ts >= baseline_ts + k * RUN_S * 1000 / (KILLS + 1), "the plant"
                )
                part_made.clear()
                _wait(part_made.is_set, "a part to be completed")
                gateway.kill9()  # right as the counters moved
                gateway.start()
            _wait(lambda: running.server.last.ts >= baseline_ts + RUN_S * 1000, "the plant to run")
            running.hold()
            held_at = int(time.time() * 1000) + 50
            _wait(lambda: _read_all(settings, machines, held_at), "the gateway to read every machine's final state")
            _wait(lambda: _buffered(settings) == 0, "the gateway to deliver (and verify) everything")
        finally:
            if gateway.alive():
                assert gateway.terminate() == 0, (tmp_path / "gateway.log").read_text()[-3000:]
            running.stop()

    for machine in ROLL_OVER:
        seen = counters[machine]
        assert any(b < a for a, b in itertools.pairwise(seen)), f"{machine}'s counter did not roll over"
    truth = [e for e in read_ground_truth(tmp_path / "plant" / "ground_truth.jsonl") if e.ts > baseline_ts]
    made: dict[str, Counter[str]] = defaultdict(Counter)
    for entry in truth:
        if entry.kind == "part":
            made[entry.machine_id][entry.mode] += 1
    resets = {e.machine_id: e.ts for e in truth if e.kind == "device_fault" and e.mode == "counter_reset"}
    assert set(resets) == set(RESET_AT_S)

    parts = read_topic(settings, topic_name(settings, QUALITY_METRICS), payload=QualityMetric).events
    assert len({(p.machine_id, p.seq) for p in parts}) == len(parts), "a sequence number twice"
    assert len({(p.machine_id, p.part_id) for p in parts}) == len(parts), "a part counted twice"
    got: dict[str, Counter[str]] = defaultdict(Counter)
    for part in parts:
        got[part.machine_id][part.result.value] += 1
    for machine in machines:
        if machine not in resets:
            assert got[machine] == made[machine], f"{machine}: counted {got[machine]}, made {made[machine]}"
            continue
        invisible = Counter(
            e.mode
            for e in truth
            if e.kind == "part"
            and e.machine_id == machine
            and resets[machine] - READ_INTERVAL_MS < e.ts <= resets[machine]
        )
        missing = made[machine] - got[machine]
        assert not got[machine] - made[machine], f"{machine}: counted parts it did not make"
        assert not missing - invisible, f"{machine}: lost {missing}, only {invisible} were invisible to counters"
    total = sum(sum(c.values()) for c in made.values())
    counted = sum(sum(c.values()) for c in got.values())
    print(f"\nparts made {total}, counted {counted}, gateway killed {KILLS}x, resets {sorted(resets)}")
    assert total > 3 * len(machines), "too few parts to show anything"

    events = read_topic(settings, topic_name(settings, MACHINE_EVENTS), payload=MachineEvent).events
    for machine in machines:
        reported = _collapse(
            e.state
            for e in events
            if e.machine_id == machine and e.event_type in STATE_CHANGES and e.attributes.get("initial") != "true"
        )
        actual = _collapse(e.mode for e in truth if e.kind == "state" and e.machine_id == machine)
        assert reported == actual, f"{machine}: states reported {reported}, the plant went through {actual}"


def _collapse(states) -> list[str]:
    out: list[str] = []
    for state in states:
        if not out or out[-1] != state:
            out.append(state)
    return out
