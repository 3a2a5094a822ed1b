"""The historian-import path: simulated history written straight to bronze.

What it writes must be what the stock engine produces (same readings in the same order,
the same events), marked as imported (partition -1, synthetic offsets), with sequence
numbers and offsets that continue across imports.
"""

from __future__ import annotations

import math

import pyarrow.compute as pc
import pytest

from plantstream.contract.streams import STREAMS
from plantstream.orchestration.resources import Lake
from plantstream.simulator.engine import PlantSimulator, snapshot_telemetry, utc_ms
from plantstream.simulator.history import HISTORY_PARTITION, history_plant, write_history, write_plant_file
from plantstream.simulator.plant_config import load_plant

pytestmark = pytest.mark.integration
START = utc_ms(2026, 3, 2)


def _settings(platform_settings, tmp_path, name: str):
    return platform_settings.model_copy(
        update={"lake": platform_settings.lake.model_copy(update={"prefix": f"test/history-{name}-{tmp_path.name}"})}
    )


def _bronze(settings, stream: str):
    return Lake(settings).table("bronze", stream).to_pyarrow_dataset().to_table()


def test_history_plant_scales_the_shipped_plant_and_round_trips_as_a_file(tmp_path) -> None:
    plant = history_plant(12)
    shipped = load_plant()
    assert [(m.machine_id, m.machine_type, m.line, m.area) for m in plant.machines()] == [
        (m.machine_id, m.machine_type, m.line, m.area) for m in shipped.machines()
    ]
    assert plant.shifts == shipped.shifts
    assert [(d.name, d.start, d.lines) for d in plant.planned_downtime] == [
        (d.name, d.start, d.lines) for d in shipped.planned_downtime
    ]
    big = history_plant(30, signals={"conveyor": ["air_temperature", "power"]})
    assert len(big.machines()) == 30 and {m.line for m in big.machines()} == {f"line-{n}" for n in range(1, 9)}
    assert next(m.signals for m in big.machines() if m.machine_type == "conveyor") == ("air_temperature", "power")
    assert load_plant(write_plant_file(big, tmp_path / "plant.yaml")) == big


def test_bronze_holds_what_the_stock_engine_produces(platform_settings, tmp_path) -> None:
    settings = _settings(platform_settings, tmp_path, "stock")
    plant = history_plant(6, sample_period_s=1.0)
    result = write_history(settings, plant=plant, start_ms=START, hours=0.2)
    assert result.steps == 720 and result.end_ms == START + 720_000

    stock = PlantSimulator(plant, START - 1000, seed=plant.seed, faults=False)
    counters: dict[str, int] = {}

    def take_seq(machine: str) -> int:
        counters[machine] = counters.get(machine, 0) + 1
        return counters[machine] - 1

    readings, events, parts, energy = [], [], [], []
    for _ in range(result.steps):
        snapshot = stock.step()
        readings += snapshot_telemetry(snapshot, take_seq)
        events += snapshot.events
        parts += snapshot.parts
        energy += snapshot.energy
    assert snapshot.ts == result.end_ms - 1000

    telemetry = _bronze(settings, "telemetry").sort_by([("machine_id", "ascending"), ("seq", "ascending")])
    expected = sorted(readings, key=lambda r: (r.machine_id, r.seq))
    assert telemetry.num_rows == len(expected) == result.rows["telemetry"]
    got = zip(*(telemetry[c].to_pylist() for c in ("machine_id", "seq", "signal", "source_ts", "value")), strict=True)
    for (machine, seq, signal, ts, value), want in zip(got, expected, strict=True):
        assert (machine, seq, signal, ts) == (want.machine_id, want.seq, want.signal, want.source_ts)
        assert math.isclose(value, want.value, abs_tol=1e-9)

    bronze_events = _bronze(settings, "events").sort_by([("machine_id", "ascending"), ("seq", "ascending")])
    initial = bronze_events.filter(pc.equal(bronze_events["seq"], 0))
    assert set(initial["source_ts"].to_pylist()) == {START}
    assert set(initial["event_type"].to_pylist()) == {"MachineStarted"}
    assert sorted(initial["machine_id"].to_pylist()) == sorted(m.machine_id for m in plant.machines())
    assert all(dict(a).get("initial") == "true" for a in initial["attributes"].to_pylist())
    # After its initial state event, every machine's events are the stock engine's, one seq further on.
    stock_events = sorted((e.machine_id, e.seq + 1, e.event_type.value, e.state, e.reason) for e in events)
    imported = [
        row
        for row in zip(
            *(bronze_events[c].to_pylist() for c in ("machine_id", "seq", "event_type", "state", "reason")), strict=True
        )
        if row[1] > 0
    ]
    assert sorted(imported) == stock_events
    for stream, produced in (("quality", parts), ("energy", energy)):
        table = _bronze(settings, stream)
        assert sorted(zip(table["machine_id"].to_pylist(), table["seq"].to_pylist(), strict=True)) == sorted(
            (e.machine_id, e.seq) for e in produced
        ), stream


def test_a_second_import_continues_sequence_numbers_and_offsets(platform_settings, tmp_path) -> None:
    settings = _settings(platform_settings, tmp_path, "continue")
    plant = history_plant(4, sample_period_s=10.0)
    first = write_history(settings, plant=plant, start_ms=START, hours=2, telemetry_rows_per_commit=5_000)
    write_history(settings, plant=plant, start_ms=first.end_ms, hours=2, telemetry_rows_per_commit=5_000)
    for spec in STREAMS:
        table = _bronze(settings, spec.name)
        assert set(table["kafka_partition"].to_pylist()) == {HISTORY_PARTITION}, spec.name
        offsets = sorted(table["kafka_offset"].to_pylist())
        assert offsets == list(range(len(offsets))), spec.name  # unique, and no offset skipped
        by_machine: dict[str, list[int]] = {}
        for machine, seq in zip(table["machine_id"].to_pylist(), table["seq"].to_pylist(), strict=True):
            by_machine.setdefault(machine, []).append(seq)
        for machine, seqs in by_machine.items():
            assert sorted(seqs) == list(range(len(seqs))), (spec.name, machine)
    times = _bronze(settings, "telemetry")["source_ts"]
    assert pc.min(times).as_py() == START and pc.max(times).as_py() == START + 4 * 3_600_000 - 10_000
