"""The digital twin's state machine (``streaming/twin.py``), its rows and the query view, without Kafka."""

from __future__ import annotations

import pickle

import msgspec
import numpy as np
import pytest
from branch_events import MINUTE_MS, SECOND_MS, SPECS, Plant, day_ms, decoded

from plantstream.contract.events import AlertAction, AlertType, Severity, TwinState
from plantstream.contract.streams import StreamSpec
from plantstream.contract.topics import ALERTS
from plantstream.domain.oee import oee
from plantstream.domain.shifts import ShiftCalendar
from plantstream.streaming.oee_live import MachineInfo, MachineOee, WindowId
from plantstream.streaming.twin import PartitionTwin, TwinConfig, twin_rows
from plantstream.streaming.twin_query import twin_view

ALERTS_SPEC = StreamSpec("twin_alerts", ALERTS, frozenset())
T0 = day_ms(1) + 6 * 3_600_000  # 06:00 yesterday, the start of shift "day"


def cfg(**kw) -> TwinConfig:
    values = {
        "calendar": ShiftCalendar([("day", "06:00", "14:00"), ("late", "14:00", "22:00")]),
        "emit_interval_s": 0.2,
        "stale_after_ms": 15_000,
        "idle_key_expiry_ms": 3_600_000,
    }
    return TwinConfig(**{**values, **kw})


def feed(twin: PartitionTwin, plant: Plant, stream: str, *, first: int = 0) -> None:
    events = [e for s, e in plant.events if s == stream]
    spec = ALERTS_SPEC if stream == "alerts" else SPECS[stream]
    twin.process(decoded(spec, events[first:], first_offset=first))


def state_of(twin: PartitionTwin, machine: str) -> TwinState:
    return twin.state_of(machine, T0 + 3_600_000)


def test_latest_reading_per_signal_wins_by_event_time_and_a_stale_marker_keeps_the_value_marked_stale() -> None:
    plant = Plant()
    plant.reading("m", T0 + 2_000, "torque", 42.0)
    plant.reading("m", T0 + 1_000, "torque", 41.0)  # older, arrives later: ignored
    plant.reading("m", T0 + 2_000, "rotational_speed", 1500.0)
    plant.reading("m", T0 + 3_000, "rotational_speed", None, quality="stale")  # the gateway lost the device
    twin = PartitionTwin(cfg())
    feed(twin, plant, "telemetry")
    s = state_of(twin, "m")
    assert s.signals["torque"].value == 42.0 and s.signals["torque"].ts == T0 + 2_000
    assert not s.signals["torque"].stale
    speed = s.signals["rotational_speed"]
    assert speed.value == 1500.0 and speed.value_ts == T0 + 2_000, "the last value, with when it was measured"
    assert speed.quality.value == "stale" and speed.ts == T0 + 3_000 and speed.stale
    assert s.source_ts == T0 + 3_000 and s.seq >> 16 == 4, "the version counts the readings folded in"


def test_a_signal_that_stopped_and_a_machine_that_stopped_are_shown_stale() -> None:
    plant = Plant()
    plant.reading("quiet", T0, "torque", 1.0)
    for k in range(0, 40):
        plant.reading("busy", T0 + k * SECOND_MS, "torque", float(k))
        plant.reading("quiet", T0 + k * SECOND_MS, "rotational_speed", float(k))  # speed goes on, torque stopped
    plant.reading("gone", T0, "torque", 5.0)
    twin = PartitionTwin(cfg())
    feed(twin, plant, "telemetry")
    quiet = state_of(twin, "quiet")
    assert quiet.signals["torque"].stale and not quiet.signals["rotational_speed"].stale
    assert not quiet.stale
    gone = state_of(twin, "gone")
    assert gone.stale and gone.signals["torque"].stale, "its readings stopped while the partition's went on"
    assert "gone" in twin.dirty, "a machine that turns stale is published again"
    view = twin_view(state_of(twin, "busy"), now_ms=T0 + 39 * SECOND_MS + 20_000, stale_after_ms=15_000)
    assert view["stale"] and view["signals"]["torque"]["stale"], "a reader's clock past the limit: stale"
    fresh = twin_view(state_of(twin, "busy"), now_ms=T0 + 40 * SECOND_MS, stale_after_ms=15_000)
    assert not fresh["stale"] and fresh["signals"]["torque"]["age_s"] == pytest.approx(1.0)


def test_state_counters_energy_and_oee() -> None:
    plant = Plant()
    plant.state("m", T0 - 60_000, "stopped", "off_shift")
    plant.state("m", T0, "running")
    for k in range(10):
        plant.part("m", T0 + k * 30_000, good=k != 3)
    plant.energy("m", T0 + 5 * MINUTE_MS, kwh=12.5)
    twin = PartitionTwin(cfg())
    for stream in ("events", "quality", "energy"):
        feed(twin, plant, stream)
    feed(twin, plant, "quality")  # a replay of the parts: counted once
    s = state_of(twin, "m")
    assert (s.state, s.reason, s.state_since_ts) == ("running", None, T0)
    assert (s.shift, s.shift_start_ts, s.parts_total, s.parts_good, s.parts_scrap) == ("day", T0, 10, 9, 1)
    assert s.last_part_id == "m-9" and s.last_part_result.value == "good"
    assert (s.energy_kwh, s.energy_ts) == (12.5, T0 + 5 * MINUTE_MS)
    result = oee({("running", ""): 300.0}, ideal_cycle_s=30.0, total_count=10, good_count=9)
    window = WindowId("shift", "day", T0, T0, T0 + 8 * 3_600_000)
    twin.process(
        MachineOee(
            "m", MachineInfo("plant-1", "machining", "line-1", 30.0), window, T0 + 300_000, False, result, 0.0, 0
        )
    )
    s = state_of(twin, "m")
    assert s.oee is not None and s.oee.oee == pytest.approx(0.9) and not s.oee.final
    # a new shift starts: its counters start at zero, the old shift's parts arriving late change nothing
    late = Plant()
    late._seq["m", "quality"] = 10
    late._seq["m", "events"] = 20
    late.part("m", T0 + 8 * 3_600_000 + 1_000)
    late.part("m", T0 + 5_000)
    feed(twin, late, "quality")
    s = state_of(twin, "m")
    assert (s.shift, s.parts_total) == ("late", 1)


def test_alerts_open_and_clear_by_id_replays_change_nothing_and_the_failure_probability_seam() -> None:
    plant = Plant()
    plant.reading("m", T0, "torque", 1.0)
    common = {"alert_type": AlertType.ANOMALY_DETECTED, "severity": Severity.WARNING, "message": "torque spike"}
    plant.alert(
        "m", T0 + 1_000, alert_id="a1", action=AlertAction.RAISE, raised_at=T0 + 1_000, signal="torque", **common
    )
    plant.alert("m", T0 + 2_000, alert_id="a2", action=AlertAction.RAISE, raised_at=T0 + 2_000, **common)
    plant.alert("m", T0 + 3_000, alert_id="a1", action=AlertAction.CLEAR, raised_at=T0 + 1_000, **common)
    plant.alert(
        "m",
        T0 + 4_000,
        alert_type=AlertType.MAINTENANCE_REQUIRED,
        severity=Severity.WARNING,
        message="failure likely",
        alert_id="p1",
        attributes={"failure_probability": "0.83"},
    )
    plant.alert("line:plant-1/line-1", T0, alert_id="q1", **common)  # a line's alert: not a machine
    twin = PartitionTwin(cfg())
    feed(twin, plant, "telemetry")
    feed(twin, plant, "alerts")
    feed(twin, plant, "alerts", first=0)  # replayed after a crash
    s = state_of(twin, "m")
    assert [a.alert_id for a in s.open_alerts] == ["a2", "p1"]
    assert s.failure_probability == pytest.approx(0.83) and s.failure_probability_ts == T0 + 4_000
    assert "line:plant-1/line-1" not in twin.machines
    assert s.source_ts == T0, "alerts are about the machine, not readings from it"


def test_emission_is_throttled_by_wall_clock_and_forced_at_the_end() -> None:
    now = [100.0]
    twin = PartitionTwin(cfg(emit_interval_s=0.2), wall=lambda: now[0])
    plant = Plant()
    plant.reading("a", T0, "torque", 1.0)
    feed(twin, plant, "telemetry")
    first = twin.emit()
    assert first is not None and [s.machine_id for s in first.states] == ["a"]
    assert msgspec.json.decode(first.documents[0], type=TwinState) == first.states[0]
    plant.reading("a", T0 + 1_000, "torque", 2.0)
    feed(twin, plant, "telemetry", first=1)
    assert twin.emit() is None and twin.next_emit_at() == pytest.approx(100.2)
    now[0] = 100.25
    assert twin.emit().states[0].signals["torque"].value == 2.0
    assert twin.emit() is None and twin.next_emit_at() is None
    plant.reading("a", T0 + 2_000, "torque", 3.0)
    feed(twin, plant, "telemetry", first=2)
    assert twin.emit(force=True) is not None


def test_snapshot_round_trip_bounded_state_and_rows() -> None:
    plant = Plant()
    for k in range(3):
        plant.reading(f"m{k}", T0, "torque", float(k))
    plant.part("m0", T0 + 1_000)
    twin = PartitionTwin(cfg())
    feed(twin, plant, "telemetry")
    feed(twin, plant, "quality")
    restored = PartitionTwin(cfg(), pickle.loads(pickle.dumps(twin.snapshot())))
    assert restored.state_of("m0", T0) == twin.state_of("m0", T0)
    later = Plant()
    later._seq["m0", "telemetry"] = 5
    later.reading("m0", T0 + 9 * 3_600_000, "torque", 9.0)  # nine hours on (shift "late"): m1 and m2 went away
    feed(restored, later, "telemetry")
    assert sorted(restored.machines) == ["m0"]
    newcomer = Plant()
    newcomer.reading("m9", T0 + 9 * 3_600_000, "vibration", 1.5)
    feed(restored, newcomer, "telemetry")
    signals = restored.state_of("m9", T0 + 9 * 3_600_000).signals
    assert list(signals) == ["vibration"], "a machine that went away leaves nothing to the one taking its row"
    states = [restored.state_of("m0", T0 + 9 * 3_600_000)]
    rows = twin_rows(states, [msgspec.json.encode(s) for s in states])
    assert rows.column_names == ["machine_id", "version", "document"], "the hot store derives the rest"
    assert rows.column("version").to_pylist() == [states[0].seq]
    stored = msgspec.json.decode(rows.column("document")[0].as_py(), type=TwinState)
    assert stored == states[0] and stored.signals["torque"].value == 9.0
    assert stored.parts_total == 0, "a new shift: nothing made yet"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_signal_table_equals_a_reading_by_reading_fold_whatever_the_order_and_cut(seed: int) -> None:
    """Random readings (out of order, repeated, stale markers without a value) in random
    batches: the vectorised table holds what folding them one by one gives."""
    rng = np.random.default_rng(seed)
    plant = Plant()
    for _ in range(600):
        machine, signal = f"m{rng.integers(4)}", ("torque", "vibration", "rotational_speed")[rng.integers(3)]
        ts = T0 + int(rng.integers(0, 8)) * SECOND_MS  # many ties: seq decides
        if rng.random() < 0.2:
            plant.reading(machine, ts, signal, None, quality="stale")
        else:
            plant.reading(machine, ts, signal, float(rng.integers(100)))
    made = [e for _, e in plant.events]
    readings = [made[i] for i in rng.permutation(len(made))]  # re-sent, replayed, reordered
    latest: dict[tuple[str, str], tuple[int, int, str]] = {}  # (machine, signal) -> (ts, seq, quality)
    valued: dict[tuple[str, str], int] = {}  # -> the newest time with a value
    for e in readings:
        key = (e.machine_id, e.signal)
        latest[key] = max(latest.get(key, (-1, -1, "")), (e.source_ts, e.seq, str(e.quality)))
        if e.value is not None:
            valued[key] = max(valued.get(key, -1), e.source_ts)
    twin = PartitionTwin(cfg())
    cuts = sorted(rng.choice(np.arange(1, len(readings)), size=12, replace=False).tolist())
    for lo, hi in zip([0, *cuts], [*cuts, len(readings)], strict=True):
        twin.process(decoded(SPECS["telemetry"], readings[lo:hi], first_offset=lo))
    for (machine, signal), (ts, _seq, quality) in latest.items():
        got = twin.state_of(machine, T0).signals[signal]
        assert (str(got.quality), got.ts) == (quality, ts), (machine, signal)
        # the value: the newest measured (among readings of the same time any may win)
        assert got.value_ts == valued.get((machine, signal)), (machine, signal)
        measured = {
            e.value for e in readings if (e.machine_id, e.signal, e.source_ts) == (machine, signal, got.value_ts)
        }
        assert got.value in measured if got.value_ts is not None else got.value is None
