"""kill -9 the plant flow twice during a faulty period, restart, drain: every alert exactly once.

A faulty simulated plant (``faulty_feed``: stuck sensors, spikes, device outages, dropouts
between minutes 10 and 27, every stream) is produced at a steady rate while the plant flow
(one process, real local broker, real hot store) is SIGKILLed twice, each time once the
alerts table holds a random share of the alerts the run concludes - i.e. while faults are
open - and restarted from its recovery state; then it drains.  The reference is what an
uncrashed replay of the same events through the branches' cores concludes
(``AlertReplay``).  Afterwards:

* the hot table ``alerts`` read with ``FINAL`` holds each reference ``(alert_id, action)``
  exactly once, with the reference's ``seq`` and evidence (the ids of a replayed epoch are
  the ids of the first run);
* raw (no ``FINAL``), grouped by ``(alert_id, action)``, every group's rows are copies of one
  alert (only ``read_ts``/``ingest_ts`` may differ: docs/alerts.md, "Delivery");
* ``factory.alerts`` deduplicated by ``(alert_id, action)`` - what an MES does - holds exactly
  the reference alerts, and every copy is identical but for ``read_ts``/``ingest_ts``;
* each injected stuck sensor is one raise and one clear (hysteresis held across the crashes).
"""

from __future__ import annotations

import random
import time
from collections import Counter

import msgspec
import pytest
import yaml
from crash_harness import PacedProducer, hot_rows, kill_when
from telemetry_flow_io import hot_arrow, read_topic

from plantstream.contract import Codec
from plantstream.contract.events import Alert
from plantstream.contract.streams import stream_named
from plantstream.contract.topics import ALERTS, message_key, topic_name
from plantstream.simulator.faulty_feed import FeedLog, faulty_feed
from plantstream.simulator.plant import default_plant
from plantstream.simulator.plant_config import FaultConfig, ScheduledFault, plant_from_machines
from plantstream.streaming.alert_branch import AnomalyConfig
from plantstream.streaming.alert_replay import AlertReplay, Decoder, chunked
from plantstream.streaming.quality_branch import QualityConfig
from plantstream.streaming.runner import prepare_flow, run_cluster

pytestmark = pytest.mark.integration

MINUTES = 30
HOUR_MS = 3_600_000


def faulty_plant(machines: list[str]) -> list[ScheduledFault]:
    """Faults from minute 10 (the detectors' baselines are warm after 5) to minute 27."""
    mill, press, robot, conveyor, mill2, press2 = machines
    return [
        ScheduledFault(at_s=600, machine=mill, kind="stuck", duration_s=240, signal="torque"),
        ScheduledFault(at_s=660, machine=robot, kind="spike", signal="vibration", magnitude=6),
        ScheduledFault(at_s=720, machine=press, kind="offline", duration_s=90),
        ScheduledFault(at_s=840, machine=conveyor, kind="dropout", duration_s=45, signal="belt_speed"),
        ScheduledFault(at_s=1000, machine=mill2, kind="stuck", duration_s=200, signal="rotational_speed"),
        ScheduledFault(at_s=1150, machine=robot, kind="spike", signal="vibration", magnitude=6),
        ScheduledFault(at_s=1250, machine=press2, kind="offline", duration_s=60),
        ScheduledFault(at_s=1400, machine=conveyor, kind="dropout", duration_s=45, signal="belt_speed"),
        ScheduledFault(at_s=1500, machine=mill, kind="stuck", duration_s=120, signal="torque"),
    ]


def _describe(a: Alert) -> tuple:
    return (a.machine_id, a.kind, a.signal, str(a.action), a.raised_at)


def same(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and a == pytest.approx(b, rel=1e-12))


def without_wall_clock(a: Alert) -> Alert:
    return msgspec.structs.replace(a, read_ts=0, ingest_ts=0)


def test_kill_9_during_faults_then_resume_gives_each_alert_exactly_once(stream_settings, tmp_path) -> None:
    machines = default_plant(6, "plant-1")
    ids = [m.machine_id for m in machines]
    plant = plant_from_machines(machines, seed=3).with_faults(FaultConfig(scheduled=faulty_plant(ids)))
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(plant.model_dump(mode="json")))
    settings = stream_settings(snapshot_interval_seconds=1.0, consumer_batch_size=500, bronze_flush_rows=5_000)
    # No failure model in this test: the failure-scoring branch stays off (no MLflow look-up).
    models = settings.models.model_copy(update={"stream_scoring": "off"})
    settings = settings.model_copy(update={"plant_file": str(path), "models": models})
    start = (int(time.time() * 1000) - 2 * HOUR_MS) // 60_000 * 60_000  # recent: inside the hot TTL
    log = FeedLog()
    steps = list(faulty_feed(plant, start_ms=start, steps=MINUTES * 60, log=log))
    stuck_faults = [e for e in log.ground_truth if e.kind == "sensor_fault" and e.mode == "stuck"]
    assert len(stuck_faults) == 3

    reference = AlertReplay(AnomalyConfig.from_settings(settings), QualityConfig.from_settings(settings))
    for batches in chunked(iter(steps), 10, Decoder()):
        reference.feed(batches)
    reference.finish()
    expected = {(a.alert_id, str(a.action)): without_wall_clock(a) for a in reference.alerts}
    assert len(expected) == len(reference.alerts), "the reference has no copies"
    assert len(expected) >= 12, f"the faults raise alerts: {len(expected)}"

    prepare_flow(settings)
    codecs: dict[type, Codec] = {}
    records = [
        (
            topic_name(settings, stream_named(stream).topic),
            message_key(e.machine_id),
            codecs.setdefault(type(e), Codec(type(e))).encode(e),
        )
        for step in steps
        for stream, e in step
    ]
    db = settings.hotstore.database
    log_path = tmp_path / "flow.log"

    def alert_rows() -> int:
        return hot_rows(settings, "alerts")

    rng = random.Random(23)
    feeder = PacedProducer(settings, records, rate=8_000)
    feeder.start()
    deadline = time.monotonic() + 240
    n = len(expected)
    targets = [
        lambda s=share: max(alert_rows() + 1, round(n * rng.uniform(*s))) for share in ((0.15, 0.35), (0.5, 0.7))
    ]
    kills_at = kill_when(settings, alert_rows, targets, processes=[1], log_path=log_path, deadline=deadline)
    assert 0 < kills_at[0] < n, f"the first kill lands while alerts are still to come: {kills_at} of {n}"
    feeder.join(max(1.0, deadline - time.monotonic()))
    assert feeder.done.is_set() and feeder.error is None, feeder.error
    run_cluster(
        settings, processes=1, stop_at_end=True, timeout_s=max(30.0, deadline - time.monotonic()), log_path=log_path
    )

    # the hot table, FINAL: each reference alert once, as the reference concluded it
    final = hot_arrow(
        settings,
        f"SELECT alert_id, action, seq, machine_id, kind, signal, toUnixTimestamp64Milli(raised_at) AS raised_at, "
        f"toUnixTimestamp64Milli(source_ts) AS source_ts, value, threshold, samples FROM {db}.alerts FINAL",
    ).to_pylist()
    keys = Counter((r["alert_id"], r["action"]) for r in final)
    assert max(keys.values()) == 1, "an (alert_id, action) twice in FINAL"
    by_key = {(r["alert_id"], r["action"]): r for r in final}
    missing = [_describe(expected[k]) for k in set(expected) - set(keys)]
    unexpected = [
        (r["machine_id"], r["kind"], r["signal"], r["action"], r["raised_at"])
        for k, r in by_key.items()
        if k not in expected
    ]
    assert not missing and not unexpected, f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
    for r in final:
        want = expected[(r["alert_id"], r["action"])]
        got = (r["seq"], r["machine_id"], r["kind"], r["signal"], r["raised_at"], r["source_ts"], r["samples"])
        assert got == (want.seq, want.machine_id, want.kind, want.signal, want.raised_at, want.source_ts, want.samples)
        assert same(r["value"], want.value) and same(r["threshold"], want.threshold), (r, want)

    # raw, grouped by (alert_id, action): copies of one alert at most (consumers read FINAL)
    copies = hot_arrow(
        settings,
        f"SELECT alert_id, action, count() AS c, uniqExact(seq, message, source_ts, raised_at, samples) AS u "
        f"FROM {db}.alerts GROUP BY alert_id, action",
    ).to_pylist()
    assert {(r["alert_id"], r["action"]) for r in copies} == set(expected)
    assert all(r["u"] == 1 for r in copies), "two different alerts share an (alert_id, action)"

    # the topic, deduplicated by (alert_id, action) as an MES does
    decoder = msgspec.json.Decoder(Alert)
    published: dict[tuple[str, str], Alert] = {}
    total = 0
    for record in read_topic(settings, topic_name(settings, ALERTS)):
        alert = without_wall_clock(decoder.decode(record.value()))
        assert record.key() == alert.machine_id.encode()
        total += 1
        key = (alert.alert_id, str(alert.action))
        assert published.setdefault(key, alert) == alert, "a replayed copy differs from the first"
    assert published == expected, f"{total} records, {len(published)} distinct, {len(expected)} expected"

    # hysteresis across the crashes: a stuck sensor found is one raise and one clear
    found = 0
    for fault in stuck_faults:
        mine = [
            a
            for a in expected.values()
            if a.kind == "stuck" and a.machine_id == fault.machine_id and a.signal == fault.signal
            and fault.ts <= (a.raised_at or 0) <= fault.ts + round(fault.duration_s * 1000) + 30_000
        ]  # fmt: skip
        if mine:
            found += 1
            assert sorted(str(a.action) for a in mine) == ["clear", "raise"], (fault, mine)
            assert len({a.alert_id for a in mine}) == 1
    assert found >= 2, "the stuck sensors were found"
