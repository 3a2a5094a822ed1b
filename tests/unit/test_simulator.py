"""The skeleton simulator: deterministic, AI4I failure rules, durable sequence numbers."""

from __future__ import annotations

from collections import Counter

import numpy as np

from plantstream.settings import load_settings
from plantstream.simulator.checkpoint import SimulatorCheckpoint
from plantstream.simulator.ground_truth import GroundTruthLog, read_ground_truth
from plantstream.simulator.physics import PlantPhysics
from plantstream.simulator.run import generate_telemetry, plan_run


def run_once(tmp_path, name: str, minutes: float = 60, machines: int = 8) -> list:
    settings = load_settings(state_dir=tmp_path, simulator={"machines": machines, "simulated_minutes": minutes})
    run = plan_run(settings, now_ms=1_800_000_000_000)
    log = GroundTruthLog(tmp_path / f"{name}.jsonl")
    events = list(generate_telemetry(settings, run, SimulatorCheckpoint(tmp_path / f"{name}-seq.json"), log))
    log.close()
    return events


def test_same_seed_same_plant(tmp_path) -> None:
    def measured(events: list) -> list[tuple]:  # ingest_ts is wall-clock time by definition
        return [(e.machine_id, e.seq, e.signal, e.value, e.source_ts, e.read_ts) for e in events]

    first = measured(run_once(tmp_path, "a"))
    assert first == measured(run_once(tmp_path, "b"))
    other_seed = load_settings(state_dir=tmp_path, simulator={"machines": 8, "simulated_minutes": 60, "seed": 7})
    log = GroundTruthLog(tmp_path / "c.jsonl")
    run = plan_run(other_seed, now_ms=1_800_000_000_000)
    assert first != measured(generate_telemetry(other_seed, run, SimulatorCheckpoint(tmp_path / "c.json"), log))
    log.close()


def test_sequence_numbers_are_gap_free_per_machine_and_continue_after_a_restart(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path, simulator={"machines": 3, "simulated_minutes": 2})
    path = tmp_path / "seq.json"
    log = GroundTruthLog(tmp_path / "gt.jsonl")
    first = SimulatorCheckpoint(path)
    now = 1_800_000_000_000
    run = plan_run(settings, resume_from_ms=first.clock_ms, now_ms=now)
    events = list(generate_telemetry(settings, run, first, log))
    first.commit(clock_ms=run.end_ms)
    second = SimulatorCheckpoint(path)
    later = plan_run(settings, resume_from_ms=second.clock_ms, now_ms=now + 90_000)
    assert later.start_ms == run.end_ms and later.end_ms == now + 90_000  # the gap since, not the future
    more = list(generate_telemetry(settings, later, second, log))
    log.close()
    for machine in {e.machine_id for e in events}:
        mine = [e for e in events + more if e.machine_id == machine]
        assert [e.seq for e in mine] == list(range(len(mine)))
        timestamps = [e.source_ts for e in mine if e.signal == mine[0].signal]
        assert timestamps == sorted(set(timestamps)), "the clock must continue, never overlap"


def test_uncommitted_sequences_are_reissued_not_skipped(tmp_path) -> None:
    path = tmp_path / "seq.json"
    store = SimulatorCheckpoint(path)
    assert [store.take("m") for _ in range(3)] == [0, 1, 2]
    assert SimulatorCheckpoint(path).take("m") == 0  # crash before Kafka acknowledged: re-send from 0


def test_failures_follow_the_ai4i_rules() -> None:
    physics = PlantPhysics(["L"] * 30 + ["M"] * 20 + ["H"] * 10, np.random.default_rng(1))
    failures = []
    for _ in range(6 * 3600):  # six simulated hours at 1 Hz
        failures.extend(physics.step(1.0))
    modes = Counter(f.mode for f in failures)
    assert {"TWF", "OSF"} <= set(modes), modes
    for failure in failures:
        d = failure.detail
        if failure.mode == "TWF":
            assert 200 <= d["tool_wear_min"] <= 245  # checked at cycle end: at most one cycle (5 min) past
        if failure.mode == "PWF":
            assert not 3500 <= d["power_w"] <= 9000
        if failure.mode == "HDF":
            assert d["temp_diff_k"] < 8.6 and d["speed_rpm"] < 1380


def test_vibration_rises_before_tool_wear_failures(tmp_path) -> None:
    events = run_once(tmp_path, "precursor", minutes=240, machines=8)
    failures = [e for e in read_ground_truth(tmp_path / "precursor.jsonl") if e.mode == "TWF"]
    assert failures, "expected at least one tool-wear failure in four simulated hours"
    rises = []
    for failure in failures:
        vib = [(e.source_ts, e.value) for e in events if e.machine_id == failure.machine_id and e.signal == "vibration"]
        early = [v for t, v in vib if failure.ts - 120 * 60_000 <= t < failure.ts - 100 * 60_000]
        late = [v for t, v in vib if failure.ts - 10 * 60_000 <= t < failure.ts]
        if early and late:
            rises.append(np.mean(late) - np.mean(early))
    assert rises and np.mean(rises) > 0.5, rises


def test_a_run_never_reaches_into_the_future(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path, simulator={"machines": 2, "simulated_minutes": 60})
    now = 1_800_000_000_000
    assert plan_run(settings, now_ms=now).end_ms == now
    assert plan_run(settings, resume_from_ms=now, now_ms=now).steps == 0  # right after the last: nothing yet
    assert plan_run(settings, resume_from_ms=now - 10_000, now_ms=now).steps == 10
