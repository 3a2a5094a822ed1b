"""The anomaly-alert branch's per-partition core: running state from the machine events, one
alert per fault, one MachineStale per machine, determinism under batch cuts and topic
interleavings (the basis of exact replays), duplicates, expiry, the Alert contract."""

from __future__ import annotations

import dataclasses
import functools
import pickle
import random

import msgspec
import pyarrow as pa
import pytest

from plantstream.contract import Codec
from plantstream.contract.events import Alert, AlertAction, AlertType
from plantstream.domain.alerts import alert_seq, limit_table
from plantstream.domain.anomaly import Limits, alert_id
from plantstream.settings import Settings
from plantstream.simulator.engine import utc_ms
from plantstream.simulator.faulty_feed import FeedLog, faulty_feed
from plantstream.simulator.plant import default_plant
from plantstream.simulator.plant_config import FaultConfig, PlannedDowntime, ScheduledFault, plant_from_machines
from plantstream.streaming.alert_branch import AnomalyConfig, PartitionAnomalies, alert_rows
from plantstream.streaming.alert_replay import AlertReplay, Decoder, chunked
from plantstream.streaming.hot_tables import alert_columns

START = utc_ms(2026, 3, 2, 10)
MILL, PRESS, ROBOT, CONVEYOR = "load-cnc-mill-001", "load-press-002", "load-robot-cell-003", "load-conveyor-004"


@functools.cache
def scenario(minutes: int = 30) -> tuple[list, FeedLog, AnomalyConfig]:
    """Four machines, 30 simulated minutes: a stuck torque, a vibration spike, an offline press,
    a belt-speed dropout, and a 5-minute planned cleaning of the line at 10:20."""
    faults = [
        ScheduledFault(at_s=900, machine=MILL, kind="stuck", duration_s=120, signal="torque"),
        ScheduledFault(at_s=1000, machine=ROBOT, kind="spike", signal="vibration", magnitude=6),
        ScheduledFault(at_s=1200, machine=PRESS, kind="offline", duration_s=60),
        ScheduledFault(at_s=1300, machine=CONVEYOR, kind="dropout", duration_s=30, signal="belt_speed"),
    ]
    plant = plant_from_machines(default_plant(4, "plant-1"), seed=5).with_faults(FaultConfig(scheduled=faults))
    cleaning = PlannedDowntime(name="cleaning", start="10:20", duration_min=5, lines=["line-1"])
    plant = plant.model_copy(update={"planned_downtime": [cleaning]})
    log = FeedLog()
    steps = list(faulty_feed(plant, start_ms=START, steps=minutes * 60, log=log))
    config = AnomalyConfig(
        state_wait_ms=120_000,
        expiry_ms=3_600_000,
        limits=limit_table({}),
        machine_types={m.machine_id: m.machine_type.value for m in plant.machines()},
    )
    return steps, log, config


def replay(steps, config, *, chunk: int = 60, drop_events: bool = False) -> list[Alert]:
    feed = ([(s, e) for s, e in step if not (drop_events and s == "events")] for step in steps)
    r = AlertReplay(config, None)
    for batches in chunked(feed, chunk, Decoder()):
        r.feed(batches)
    r.finish()
    return r.alerts


def identity(a: Alert) -> tuple:
    """Everything of an alert but when the stream concluded it (wall clock)."""
    return msgspec.structs.replace(a, read_ts=0, ingest_ts=0)


def by_unit(alerts: list[Alert]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for a in alerts:
        out.setdefault(a.machine_id, []).append(identity(a))
    return {m: sorted(v, key=lambda a: a.seq) for m, v in out.items()}


def raises(alerts: list[Alert], kind: str, machine: str | None = None) -> list[Alert]:
    return [a for a in alerts if a.kind == kind and a.action is AlertAction.RAISE and machine in (None, a.machine_id)]


def test_one_stuck_sensor_is_one_raise_and_one_clear_with_its_evidence() -> None:
    steps, log, config = scenario()
    alerts = replay(steps, config)
    stuck = [a for a in alerts if a.kind == "stuck"]
    assert [(a.machine_id, a.signal, a.action) for a in stuck] == [
        (MILL, "torque", AlertAction.RAISE),
        (MILL, "torque", AlertAction.CLEAR),
    ]
    raise_, clear = stuck
    fault = next(g for g in log.ground_truth if g.mode == "stuck")
    assert raise_.alert_type is AlertType.SENSOR_FAULT
    assert raise_.alert_id == clear.alert_id == alert_id(MILL, "torque", "stuck", raise_.raised_at)
    assert clear.raised_at == raise_.raised_at == raise_.source_ts
    assert fault.ts <= raise_.window_start < raise_.source_ts <= fault.ts + 15_000  # 10 repeats from the fault
    assert raise_.samples == 10 and raise_.threshold == 10
    assert "stuck at" in raise_.message and f"{raise_.value:.4g}" in raise_.message
    assert clear.source_ts > fault.ts + fault.duration_s * 1000 - 1000


def test_a_spike_and_a_dropout_say_which_value_crossed_which_threshold() -> None:
    steps, _, config = scenario()
    alerts = replay(steps, config)
    (spike,) = raises(alerts, "spike")
    assert (spike.machine_id, spike.signal, spike.alert_type) == (ROBOT, "vibration", AlertType.ANOMALY_DETECTED)
    assert spike.statistic >= spike.threshold == 8.0  # robust z against the baseline centre
    assert spike.value > spike.reference and "robust standard deviations" in spike.message
    (dropout,) = raises(alerts, "dropout")
    assert (dropout.machine_id, dropout.signal, dropout.alert_type) == (CONVEYOR, "belt_speed", AlertType.SENSOR_FAULT)
    assert dropout.value is None and dropout.samples == 3


def test_an_offline_machine_is_one_machine_stale_alert_not_one_per_signal() -> None:
    steps, log, config = scenario()
    alerts = replay(steps, config)
    stale = [a for a in alerts if a.kind == "stale"]
    assert [(a.machine_id, a.signal, a.action, a.alert_type) for a in stale] == [
        (PRESS, None, AlertAction.RAISE, AlertType.MACHINE_STALE),
        (PRESS, None, AlertAction.CLEAR, AlertType.MACHINE_STALE),
    ]
    outage = next(g for g in log.ground_truth if g.kind == "device_fault")
    raise_, clear = stale
    assert outage.ts < raise_.source_ts <= outage.ts + 5_000  # the gateway's marker, 3 s after the last answer
    assert raise_.window_start < outage.ts + 1_000  # the last answer before it
    assert clear.source_ts >= outage.ts + outage.duration_s * 1000
    assert clear.samples == 7  # six signals and the derived temperature difference were stale


def test_a_stopped_machine_is_no_anomaly_because_the_machine_events_say_it_stopped() -> None:
    steps, _, config = scenario()
    cleaning = (START + 20 * 60_000, START + 26 * 60_000)

    def during_cleaning(alerts: list[Alert]) -> list[Alert]:
        return [
            a
            for a in alerts
            if a.action is AlertAction.RAISE
            and a.kind in ("limit", "stuck")
            and cleaning[0] <= a.source_ts < cleaning[1]
        ]

    assert during_cleaning(replay(steps, config)) == []
    # Without the machine events the same stop looks like low limits and stuck drives.
    blind = during_cleaning(replay(steps, config, drop_events=True))
    assert {a.kind for a in blind} >= {"limit"}, blind


def without_state_seq(steps: list) -> list:
    """The feed as an older gateway sent it: readings that do not name their state event."""
    return [
        [(s, msgspec.structs.replace(e, state_seq=None) if s == "telemetry" else e) for s, e in step] for step in steps
    ]


@pytest.mark.parametrize("named_state", [True, False], ids=["state_seq", "no_state_seq"])
def test_alerts_do_not_depend_on_batch_cuts_topic_interleaving_or_restarts(named_state: bool) -> None:
    steps, _, config = scenario()
    steps = steps if named_state else without_state_seq(steps)
    reference = by_unit(replay(steps, config))
    assert sum(len(v) for v in reference.values()) >= 8
    rng = random.Random(11)
    for _ in range(3):
        decoder = Decoder()
        core = PartitionAnomalies(config, clock=lambda: 0.0)
        got: list[Alert] = []
        i = 0
        while i < len(steps):
            n = rng.randint(1, 90)
            batches = next(iter(chunked(steps[i : i + n], n, decoder)))
            i += n
            rng.shuffle(batches)  # telemetry before or after the machine events
            if rng.random() < 0.3 and len(batches) > 1:  # ... or in another call
                got += core.process(batches[:1])
                batches = batches[1:]
            got += core.process(batches)
            if rng.random() < 0.2:  # a restart from a snapshot
                core = PartitionAnomalies(config, pickle.loads(pickle.dumps(core.snapshot())), clock=lambda: 0.0)
        got += core.flush()
        assert by_unit(got) == reference


def test_copies_of_readings_are_judged_once() -> None:
    steps, _, config = scenario()
    reference = by_unit(replay(steps, config))
    doubled = []
    for k, step in enumerate(steps):
        doubled.append(step)
        if k % 97 == 0 and k:  # a gateway re-sends the last half minute
            doubled.append([se for s in steps[k - 30 : k] for se in s if se[0] == "telemetry"])
    assert by_unit(replay(doubled, config)) == reference


def test_a_machine_that_goes_away_expires_and_its_open_alerts_are_cleared() -> None:
    steps, _, config = scenario()
    config = AnomalyConfig(
        state_wait_ms=60_000, expiry_ms=300_000, limits=config.limits, machine_types=config.machine_types
    )
    # The press goes silent for good at minute 20 (after its stale marker); the others go on.
    cut = START + 20 * 60_000 + 3_000
    feed = [[(s, e) for s, e in step if e.machine_id != PRESS or e.event_ts < cut] for step in steps]
    r = AlertReplay(config, None)
    for batches in chunked(feed, 60, Decoder()):
        r.feed(batches)
    core = r.anomaly[0]
    assert PRESS not in core.machines
    assert all(m != PRESS for m, _ in core.bank.keys)
    press = [a for a in r.alerts if a.machine_id == PRESS]
    open_ids = {a.alert_id for a in press if a.action is AlertAction.RAISE} - {
        a.alert_id for a in press if a.action is AlertAction.CLEAR and a.attributes.get("reason") != "expired"
    }
    expired = [a for a in press if a.attributes.get("reason") == "expired"]
    assert open_ids and {a.alert_id for a in expired} == open_ids  # every open alert cleared once
    assert all(a.source_ts >= cut - 5_000 + config.expiry_ms for a in expired)
    assert core.waiting < 4 * 8 * 90  # what waits for machine events stays small


def test_readings_wait_for_the_machine_events_to_pass_their_time() -> None:
    steps, _, config = scenario(minutes=10)
    decoder = Decoder()
    core = PartitionAnomalies(config, clock=lambda: 0.0)
    telemetry = [[se for se in step if se[0] == "telemetry"] for step in steps[:300]]
    events = [[se for se in step if se[0] == "events"] for step in steps[:300]]
    core.process(next(iter(chunked(events[:10], 10, decoder))))  # every machine's state is known
    core.process(next(iter(chunked(telemetry[10:100], 90, decoder))))
    assert core.waiting > 0  # minutes 10-100 s wait: no machine event after them yet
    core.process(next(iter(chunked(events[10:300], 290, decoder))))
    assert core.waiting == 0


def test_settings_limits_override_the_defaults() -> None:
    table = limit_table({"*": {"torque": {"high": 70.0}}, "press": {"power": {"high": 30.0}}})
    assert table.for_series("cnc_mill", "torque") == Limits(high=70.0)
    assert table.for_series("press", "power") == Limits(high=30.0)
    assert table.for_series("cnc_mill", "vibration").high == 12.0  # untouched default
    with pytest.raises(ValueError, match="outside the valid range"):
        limit_table({"*": {"torque": {"high": 900.0}}})


def test_alerts_round_trip_the_contract_and_fill_the_hot_table_columns() -> None:
    steps, _, config = scenario()
    alerts = replay(steps, config)
    codec = Codec(Alert)
    for a in alerts:
        assert codec.decode(codec.encode(a)) == a
    rows = alert_rows(alerts)
    assert rows.column_names == [*alert_columns(), "copy_rank"]
    assert rows.num_rows == len(alerts)
    assert rows.column("source_ts").type == pa.timestamp("ms", tz="UTC")
    seqs = [(a.machine_id, a.seq) for a in alerts]
    assert len(set(seqs)) == len(seqs)  # unique per unit and branch
    assert alert_seq(0, START, 0) < alert_seq(0, START, 1) < alert_seq(1, 0, 0)


def test_the_branch_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="scrap_clear_sigma"):
        Settings(alerts={"scrap_sigma": 2.0, "scrap_clear_sigma": 3.0})


def test_a_reading_that_names_its_state_event_is_judged_as_soon_as_that_event_is_here() -> None:
    """The gateway stamps each reading with its machine's latest event (``state_seq``): the
    branch then needs no events *after* the reading, so nothing waits between batches."""
    steps, _, config = scenario(minutes=10)

    def most_waiting(feed: list) -> int:
        """Readings left waiting after a call, at most, once every machine has sent an event."""
        core, decoder, waiting = PartitionAnomalies(config, clock=lambda: 0.0), Decoder(), 0
        for batches in chunked(feed, 5, decoder):  # five steps of the plant per call
            core.process(batches)
            if all(core.known[m.mid] for m in core.machines.values()) and len(core.machines) == 4:
                waiting = max(waiting, core.waiting)
        return waiting

    assert most_waiting(steps) == 0
    assert most_waiting(without_state_seq(steps)) > 100  # they wait for the partition's next event
    # Same alerts either way (the engine's readings are taken after its step's events).
    assert by_unit(replay(steps, config)) == by_unit(replay(without_state_seq(steps), config))


def test_readings_before_a_machines_first_event_wait_for_it() -> None:
    """Which topic's batch comes first must not decide whether a reading is judged with the
    machine's state: the telemetry of a fresh core arriving before any machine event (a
    flow's first batch, or a restart that reads telemetry first) concludes the same."""
    steps, _, config = scenario()
    reference = by_unit(replay(steps, config))

    def telemetry_first(cfg: AnomalyConfig) -> dict:
        core, decoder, got = PartitionAnomalies(cfg, clock=lambda: 0.0), Decoder(), []
        for batches in chunked(steps, 30, decoder):
            got += core.process([b for b in batches if b.stream.name == "telemetry"])
            got += core.process([b for b in batches if b.stream.name != "telemetry"])
        return by_unit([*got, *core.flush()])

    assert telemetry_first(config) == reference
    # A flow without the events stream judges at once: the first readings without a state.
    blind = dataclasses.replace(config, machine_events=False)
    assert telemetry_first(blind) != reference
