"""Live OEE's state machines (``streaming/oee_live.py``), without Bytewax or Kafka.

The figures themselves are ``domain.oee``'s (tests/unit/test_oee.py pins the function and its
edge cases); these tests pin what the stream adds: which events make which windows, when a
shift is final, that a final shift equals the hand-computed worked example and a
recomputation from the raw events however the streams' batches are cut and interleaved,
duplicates, late and idle streams, recovery and bounded state.
"""

from __future__ import annotations

import pickle

import pytest
from branch_events import HOUR_MS, MINUTE_MS, SECOND_MS, SPECS, Plant, batches, day_ms, decoded
from oee_recompute import RawEvents, simulated_plant

from plantstream.domain.shifts import ShiftCalendar
from plantstream.streaming.oee_live import (
    HOUR,
    SHIFT,
    LineInput,
    LineOee,
    MachineInfo,
    MachineOee,
    OeeConfig,
    PartitionOee,
    oee_row,
)

STREAMS = ("events", "quality", "energy")
NO_TELEMETRY = {k: SPECS[k] for k in STREAMS}
DAY0 = day_ms(1)


def t(h: float, m: float = 0, s: float = 0) -> int:
    return int(DAY0 + h * HOUR_MS + m * MINUTE_MS + s * SECOND_MS)


def config(machines: dict[str, tuple[str, float]], shifts, *, partitions=(0,), **kw) -> OeeConfig:
    defaults = {
        "step_ms": 60_000,
        "allowed_lateness_ms": 30_000,
        "idle_stream_s": 30.0,
        "idle_key_expiry_ms": 3_600_000,
    }
    return OeeConfig(
        machines={m: MachineInfo("plant-1", "machining", line, ideal) for m, (line, ideal) in machines.items()},
        calendar=ShiftCalendar(shifts),
        partitions=partitions,
        **{**defaults, **kw},
    )


def worked_example(plant: Plant, machine: str) -> None:
    """docs/oee.md's worked example: one 8 h shift 06:00-14:00 of a mill, ideal cycle 30 s."""
    plant.lines[machine] = "line-1"
    plant.state(machine, t(5), "stopped", "off_shift")
    plant.state(machine, t(6), "maintenance", "planned:cleaning")  # 1,800 s planned
    plant.state(machine, t(6, 30), "running")
    plant.state(machine, t(10), "stopped", "failure:TWF")  # 2,400 s
    plant.state(machine, t(10, 40), "running")
    plant.state(machine, t(12), "idle", "starved")  # 300 s
    plant.state(machine, t(12, 5), "running")
    plant.state(machine, t(14), "stopped", "off_shift")
    running = [(t(6, 30), t(10)), (t(10, 40), t(12)), (t(12, 5), t(14))]  # 24,300 s

    def at_run_time(offset_ms: int) -> int:
        for start, end in running:
            if offset_ms < end - start:
                return start + offset_ms
            offset_ms -= end - start
        raise AssertionError("beyond the run time")

    for i in range(720):  # 720 parts, every 20th scrap: 684 good
        plant.part(machine, at_run_time(int((i + 0.5) * 33_750)), good=i % 20 != 19)
    for k in range(9 * 60 + 31):  # the meter every minute, 05:00-14:30
        plant.energy(machine, t(5) + k * MINUTE_MS, kwh=float(k))


def run(cfg: OeeConfig, items, *, streams=STREAMS, state=None, finish=True):
    oee = PartitionOee(cfg, state, streams=streams, wall=lambda: 0.0)
    out = []
    for batch in items:
        out.extend(oee.process(batch))
    if finish:
        out.extend(oee.finish())
    return oee, out


def finals(out) -> dict[tuple[str, int], MachineOee]:
    return {(o.machine_id, o.window.shift_start_ms): o for o in out if isinstance(o, MachineOee) and o.final}


@pytest.mark.parametrize("batch_size", [1, 37, 10_000])
def test_worked_example_closed_shift_is_final_and_equals_the_hand_computation(batch_size: int) -> None:
    plant = Plant()
    worked_example(plant, "mill-1")
    cfg = config({"mill-1": ("line-1", 30.0)}, [("day", "06:00", "14:00")])
    _, out = run(cfg, batches(plant, batch_size, specs=NO_TELEMETRY))
    final = finals(out)
    assert list(final) == [("mill-1", t(6))]
    row = final["mill-1", t(6)]
    r = row.result
    assert (row.window.start_ms, row.window.end_ms, row.as_of_ms) == (t(6), t(14), t(14))
    assert r.planned_production_s == 27_000 and r.run_s == 24_300 and r.period_s == 28_800
    assert r.availability == pytest.approx(0.90)
    assert r.performance == pytest.approx(8 / 9)
    assert r.quality == pytest.approx(0.95)
    assert r.oee == pytest.approx(0.76)
    assert r.availability_loss_s == {"failure:TWF": 2_400.0, "starved": 300.0}
    assert r.planned_stop_by_reason_s == {"planned:cleaning": 1_800.0}
    assert (r.total_count, r.good_count, r.scrap_count) == (720, 684, 36)
    assert r.performance_loss_s == pytest.approx(2_700) and r.quality_loss_s == pytest.approx(1_080)
    assert row.unknown_s == 0
    assert sum(isinstance(o, MachineOee) and o.final for o in out) == 1, "a final row is emitted once"

    line = LineOee(cfg)
    rows = [r for o in out if isinstance(o, LineInput) for r in line.process(o)]
    line_finals = [r for r in rows if r.final]
    assert len(line_finals) == 1 and line_finals[0].window.kind == SHIFT
    assert line_finals[0].result.oee == pytest.approx(0.76) and line_finals[0].machines == 1


def test_provisional_rows_cover_the_shift_so_far_and_the_rolling_hour() -> None:
    plant = Plant()
    worked_example(plant, "mill-1")
    cfg = config({"mill-1": ("line-1", 30.0)}, [("day", "06:00", "14:00")])
    _, out = run(cfg, batches(plant, 1, specs=NO_TELEMETRY), finish=False)
    rows = [o for o in out if isinstance(o, MachineOee) and not o.final]
    hours = [o for o in rows if o.window.kind == HOUR]
    so_far = [o for o in rows if o.window.kind == SHIFT]
    assert hours and so_far
    for o in hours:
        assert o.window.end_ms == o.as_of_ms and o.window.start_ms == o.as_of_ms - HOUR_MS
        assert o.as_of_ms % 60_000 == 0
    for o in so_far:
        assert o.window.start_ms == t(6) < o.as_of_ms < t(14)
    # the rolling hour at 13:00 is 12:00-13:00: 5 min starved, 55 min running
    at_13 = next(o for o in hours if o.as_of_ms == t(13))
    assert at_13.result.run_s == 3_300 and at_13.result.availability_loss_s == {"starved": 300.0}
    row = oee_row(at_13)
    assert row["window_kind"] == "hour" and row["shift_start"] == 0 and row["final"] == 0


def test_edge_cases_no_run_time_performance_above_one_and_a_shift_of_planned_downtime() -> None:
    plant = Plant()
    shift = [("early", "06:00", "14:00")]
    # no run time: a failure for the whole shift
    plant.state("broken", t(5), "stopped", "failure:PWF")
    # performance > 1: parts every 30 s but the plant file says 60 s
    plant.state("fast", t(5), "running")
    for k in range(int(9 * 3600 / 30)):
        plant.part("fast", t(5) + k * 30 * SECOND_MS + 15 * SECOND_MS)
    # planned downtime covering the whole shift
    plant.state("serviced", t(5), "maintenance", "planned:overhaul")
    for m in ("broken", "fast", "serviced"):
        for k in range(10 * 60):
            plant.energy(m, t(5) + k * MINUTE_MS)
    cfg = config({"broken": ("l1", 30.0), "fast": ("l1", 60.0), "serviced": ("l2", 30.0)}, shift)
    _, out = run(cfg, batches(plant, 500, specs=NO_TELEMETRY))
    final = finals(out)

    broken = final["broken", t(6)].result
    assert broken.availability == 0.0 and broken.performance is None and broken.oee == 0.0
    assert broken.availability_loss_s == {"failure:PWF": 28_800.0}

    fast = final["fast", t(6)].result
    assert fast.total_count == 960
    assert fast.performance == pytest.approx(2.0) and fast.performance_above_one
    assert fast.oee == pytest.approx(2.0), "not capped at 1"
    assert any("performance 2.0000 > 1" in w for w in fast.warnings)

    serviced = final["serviced", t(6)]
    assert serviced.result.nothing_planned
    assert serviced.result.availability is serviced.result.oee is None
    row = oee_row(serviced)
    assert row["nothing_planned"] == 1 and row["oee"] is None and row["availability"] is None


def _simulated(hours: float = 5, machines: int = 4):
    shifts = [{"name": f"s{h:02d}", "start": f"{h:02d}:00", "end": f"{(h + 2) % 24:02d}:00"} for h in range(0, 24, 2)]
    doc = {
        "name": "sim",
        "seed": 3,
        "sample_period_s": 10.0,
        "machine_types": {"cnc_mill": {"cycle_s": 30}, "press": {"cycle_s": 40}},
        "sites": {
            "plant-1": {
                "areas": {
                    "machining": {
                        "lines": {
                            f"line-{ln}": {
                                "machines": [
                                    {"id": f"m-{ln}-{i}", "type": "cnc_mill" if i % 2 else "press"}
                                    for i in range(machines // 2)
                                ]
                            }
                            for ln in (1, 2)
                        }
                    }
                }
            }
        },
        "shifts": shifts,
        "planned_downtime": [{"name": "cleaning", "start": "02:30", "duration_min": 20}],
    }
    return simulated_plant(doc, t(1), int(hours * 360), telemetry=False)


def _cfg_of(plant, **kw) -> OeeConfig:
    machines = {m.machine_id: (m.line, m.cycle_s) for m in plant.machines()}
    return config(machines, plant.shifts, **kw)


@pytest.mark.parametrize("batch_size", [7, 400])
def test_every_closed_shift_equals_a_recomputation_from_the_raw_events(batch_size: int) -> None:
    plant, events = _simulated()
    cfg = _cfg_of(plant, partitions=(0, 1))
    # two partitions: machines of each line on both, so lines are only final once both closed
    parts = {m.machine_id: i % 2 for i, m in enumerate(plant.machines())}
    streams_out = []
    for p in (0, 1):
        mine = Plant()
        mine.events = [(s, e) for s, e in events if parts[e.machine_id] == p]
        items = [decoded(b.stream, b.events_list, partition=p) for b in _cut(mine, batch_size)]
        streams_out.append(run(cfg, items)[1])
    raw = RawEvents.of_events(events)
    rows = [o for out in streams_out for o in out if isinstance(o, MachineOee) and o.final]
    assert len({o.window.shift_start_ms for o in rows}) >= 2, "the run closes at least two shifts"
    states = {s for ch in raw.states.values() for _, _, s, _ in ch}
    assert {"running", "maintenance"} <= states, "the run has production and planned downtime"
    for o in rows:
        expected = raw.machine_oee(o.machine_id, o.window.start_ms, o.window.end_ms, o.info.ideal_cycle_s)
        assert expected is not None
        assert o.result == expected, (o.machine_id, o.window)
    line = {}
    line_rows = []
    for out in streams_out:  # partition 0 first, then 1: line finals only after the second
        for o in out:
            if isinstance(o, LineInput):
                line_rows.extend(line.setdefault(o.line_key, LineOee(cfg)).process(o))
    line_finals = [r for r in line_rows if r.final]
    assert line_finals
    for r in line_finals:
        members = {m.machine_id: m.cycle_s for m in plant.machines() if m.line == r.line}
        expected = raw.line_oee(members, r.window.start_ms, r.window.end_ms)
        assert r.result == expected
        assert r.machines == len(members)


class _Cut:
    def __init__(self, stream, events_list):
        self.stream, self.events_list = stream, events_list


def _cut(plant: Plant, size: int) -> list[_Cut]:
    per = {n: e for n, e in plant.by_stream().items() if n in NO_TELEMETRY}
    out, offsets = [], dict.fromkeys(per, 0)
    while any(offsets[n] < len(e) for n, e in per.items()):
        for name, evs in per.items():
            if offsets[name] < len(evs):
                out.append(_Cut(SPECS[name], evs[offsets[name] : offsets[name] + size]))
                offsets[name] += size
    return out


def test_duplicates_count_once_and_a_late_part_leaves_the_closed_shift_alone() -> None:
    plant = Plant()
    worked_example(plant, "mill-1")
    cfg = config({"mill-1": ("line-1", 30.0)}, [("day", "06:00", "14:00")])
    items = batches(plant, 100, specs=NO_TELEMETRY)
    replayed = items[: len(items) // 2]  # a replay of the first half, batches cut the same way
    oee, out = run(cfg, items + replayed)
    assert finals(out)["mill-1", t(6)].result.total_count == 720
    # a part of the closed shift, arriving after it closed, is late: the final stays as it was
    late = Plant()
    late._seq["mill-1", "quality"] = 10_000
    late.part("mill-1", t(13, 59))
    after = oee.process(decoded(SPECS["quality"], [e for s, e in late.events if s == "quality"]))
    assert not [o for o in after if isinstance(o, MachineOee) and o.final]
    assert oee.late_events == 1


def test_a_stream_silent_for_the_idle_time_stops_holding_the_clock() -> None:
    plant = Plant()
    plant.state("m", t(5), "running")
    for k in range(4 * 60):
        plant.energy("m", t(5) + k * MINUTE_MS)
    cfg = config({"m": ("l", 30.0)}, [("a", "05:00", "06:00"), ("b", "06:00", "07:00")], idle_stream_s=30.0)
    now = [0.0]
    oee = PartitionOee(cfg, streams=STREAMS, wall=lambda: now[0])
    energy = [e for s, e in plant.events if s == "energy"]
    events = [e for s, e in plant.events if s == "events"]
    out = oee.process(decoded(SPECS["events"], events))
    out += oee.process(decoded(SPECS["energy"], energy[:70]))
    assert oee.clock_ms is None, "quality has not been seen yet: the clock waits for it"
    now[0] = 31.0  # the quality stream never delivered; events went quiet 31 s ago
    out += oee.process(decoded(SPECS["energy"], energy[70:], first_offset=70))
    assert oee.clock_ms == energy[-1].event_ts - 30_000
    assert {o.window.shift for o in out if isinstance(o, MachineOee) and o.final} == {"a", "b"}
    before = oee.clock_ms
    now[0] = 32.0
    late_event = Plant()
    late_event._seq["m", "events"] = 5
    late_event.state("m", t(6, 30), "idle", "starved")  # events speak again, far behind energy
    oee.process(decoded(SPECS["events"], [e for _, e in late_event.events]))
    assert oee.clock_ms == before, "the clock never moves backwards"


def test_snapshot_and_restore_mid_stream_gives_the_same_rows() -> None:
    plant, events = _simulated(hours=4, machines=2)
    by = Plant()
    by.events = events
    cfg = _cfg_of(plant)
    items = batches(by, 60, specs=NO_TELEMETRY)
    _, whole = run(cfg, items)
    half = len(items) // 2
    first, out = run(cfg, items[:half], finish=False)
    state = pickle.loads(pickle.dumps(first.snapshot()))
    _, rest = run(cfg, items[half:], state=state)
    assert finals(out + rest) == finals(whole)
    assert [o for o in out + rest if isinstance(o, MachineOee)] == [o for o in whole if isinstance(o, MachineOee)]


def test_state_stays_bounded_as_machines_come_and_go() -> None:
    """Two days, one machine of six active per 4-hour slot: state is pruned to the open windows."""
    plant = Plant()
    machines = [f"m{i}" for i in range(6)]
    for hour in range(48):
        active = machines[(hour // 4) % len(machines)]
        plant.state(active, t(hour), "running")
        for k in range(0, 60, 2):
            plant.part(active, t(hour, k, 10))
        for k in range(60):
            plant.energy(active, t(hour, k))
    cfg = config({m: ("l", 30.0) for m in machines}, [("a", "00:00", "12:00"), ("b", "12:00", "00:00")])
    oee = PartitionOee(cfg, streams=STREAMS, wall=lambda: 0.0)
    sizes, tracked, buckets = [], [], []
    by_hour: dict[tuple[int, str], list] = {}
    for stream, event in plant.events:  # live: each round brings about an hour of every stream
        by_hour.setdefault(((event.event_ts - DAY0) // HOUR_MS, stream), []).append(event)
    for (_, stream), events in sorted(by_hour.items()):
        oee.process(decoded(SPECS[stream], events))
        tracked.append(len(oee.machines))
        if oee.clock_ms is not None:  # retained below the clock (what arrived ahead of it is still to come)
            below = oee.clock_ms // 60_000
            buckets.append(sum(k < below for m in oee.machines.values() for k in m.buckets))
        sizes.append(len(pickle.dumps(oee.snapshot())))
    # the shift open at the end (12:00-24:00 of day 2) saw m3, m4 and m5; the others are gone
    assert sorted(oee.machines) == ["m3", "m4", "m5"], (
        "a machine gone for an hour and out of every open shift is forgotten"
    )
    assert max(tracked) <= len(machines)
    # parts every 2 minutes: the open 12-hour shift holds at most 360 buckets
    assert max(buckets) <= 12 * 30, "buckets before the open windows are dropped"
    assert all(len(m.changes) <= 3 for m in oee.machines.values())
    assert max(sizes[len(sizes) // 2 :]) <= 1.5 * max(sizes[: len(sizes) // 2]), "snapshot size stays flat"


def test_a_line_is_final_once_every_partition_closed_the_shift_or_every_machine_delivered() -> None:
    cfg = config({"a": ("l", 30.0), "b": ("l", 30.0)}, [("s", "06:00", "14:00")], partitions=(0, 1, 2))
    line = LineOee(cfg)
    plant = Plant()
    for m in ("a", "b"):
        plant.state(m, t(5), "running")
        for k in range(10 * 60):
            plant.energy(m, t(5) + k * MINUTE_MS)
    out = {}
    for p, m in ((0, "a"), (1, "b")):
        mine = [e for s, e in plant.events if e.machine_id == m]
        items = [
            decoded(SPECS["events"], [e for e in mine if e.__class__.__name__ == "MachineEvent"], partition=p),
            decoded(SPECS["energy"], [e for e in mine if e.__class__.__name__ == "EnergyUsage"], partition=p),
        ]
        out[p] = [o for o in run(cfg, items, streams=("events", "energy"))[1] if isinstance(o, LineInput)]
    closing = [o for o in out[0] if o.final and o.window.kind == SHIFT]
    rows = [r for o in closing for r in line.process(o)]
    assert rows and not any(r.final for r in rows), "b's partition has not closed the shift yet"
    rows = [r for o in out[1] if o.final and o.window.kind == SHIFT for r in line.process(o)]
    assert [r.final for r in rows] == [True], "every machine of the line delivered its final row"
    assert rows[0].machines == 2 and rows[0].result.run_s == 2 * 28_800
    assert not [r for o in out[1] if o.final for r in line.process(o)], "a final line row is emitted once"
