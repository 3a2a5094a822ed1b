"""A simulated plant with injected faults, as contract events the way the edge forwards them.

The load generator (:mod:`.kafka_producer`) runs the plant without faults; the alert
branches need the faults (and their ground truth) to be worth anything.  :func:`faulty_feed`
steps :class:`~plantstream.simulator.engine.PlantSimulator` with faults on and yields, step by
step, what the plant's Kafka topics would hold:

* telemetry of every online machine and signal (a dropout is ``value=None``,
  ``quality="bad"``; impossible values are sent as they are - the stream dead-letters them,
  the ``caught_upstream`` list says which);
* for a machine whose device stopped answering, nothing - except, once
  ``stale_after_ms`` after its last answer, one ``quality="stale"`` marker per signal
  (the gateway's staleness tracker: docs/edge.md);
* the machine events and inspected parts of the step (and energy readings when asked).

The same plant, seed and start give the same events, so a scorer can compare a run
with its ground truth (:mod:`plantstream.domain.alert_scoring`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from plantstream.contract import Quality, Telemetry
from plantstream.contract.events import _Event
from plantstream.contract.signals import SIGNALS
from plantstream.simulator.engine import PlantSimulator
from plantstream.simulator.ground_truth import GroundTruthEntry
from plantstream.simulator.plant import Machine
from plantstream.simulator.plant_config import PlantConfig

READ_DELAY_MS = 5


@dataclass
class FeedLog:
    """What a run of :func:`faulty_feed` did, filled while it runs."""

    ground_truth: list[GroundTruthEntry] = field(default_factory=list)
    caught_upstream: list[tuple[str, str, int]] = field(default_factory=list)  # (machine, signal, ts)
    events: dict[str, int] = field(default_factory=dict)  # per stream
    start_ms: int = 0
    end_ms: int = 0


def faulty_feed(
    plant: PlantConfig,
    *,
    start_ms: int,
    steps: int,
    log: FeedLog,
    stale_after_ms: int = 3_000,
    energy: bool = False,
) -> Iterator[list[tuple[str, _Event]]]:
    """Yield each step's ``(stream, event)`` list: telemetry, then machine events, parts (and energy)."""
    sim = PlantSimulator(plant, start_ms - round(plant.sample_period_s * 1000))
    log.start_ms = start_ms
    tel_seq: dict[str, int] = {}
    last_seen: dict[str, int] = {}
    marked_stale: set[str] = set()
    counts = log.events
    for _ in range(steps):
        snap = sim.step()
        log.ground_truth.extend(snap.ground_truth)
        out: list[tuple[str, _Event]] = []
        read_ts = snap.ts + READ_DELAY_MS
        for r in snap.readings:
            m = r.machine
            mid = m.machine_id
            if not r.online:
                if mid not in marked_stale and snap.ts - last_seen.get(mid, snap.ts) > stale_after_ms:
                    marked_stale.add(mid)
                    for signal in m.signals:
                        out.append(
                            (
                                "telemetry",
                                _reading(
                                    m,
                                    tel_seq,
                                    source_ts=None,
                                    read_ts=read_ts,
                                    signal=signal,
                                    value=None,
                                    q=Quality.STALE,
                                    state_seq=snap.state_seq.get(mid),
                                ),
                            )
                        )
                continue
            last_seen[mid] = snap.ts
            marked_stale.discard(mid)
            for signal, value in r.values.items():
                spec = SIGNALS[signal]
                if value is not None and not spec.valid_min <= value <= spec.valid_max:
                    log.caught_upstream.append((mid, signal, snap.ts))
                out.append(
                    (
                        "telemetry",
                        _reading(
                            m,
                            tel_seq,
                            source_ts=r.source_ts,
                            read_ts=read_ts,
                            signal=signal,
                            value=value,
                            q=r.quality[signal],
                            state_seq=snap.state_seq.get(mid),
                        ),
                    )
                )
        out.extend(("events", e) for e in snap.events)
        out.extend(("quality", p) for p in snap.parts)
        if energy:
            out.extend(("energy", e) for e in snap.energy)
        for stream, _ in out:
            counts[stream] = counts.get(stream, 0) + 1
        log.end_ms = snap.ts + sim.period_ms
        yield out


def _reading(
    machine: Machine,
    seqs: dict[str, int],
    *,
    source_ts: int | None,
    read_ts: int,
    signal: str,
    value: float | None,
    q: Quality,
    state_seq: int | None,
) -> Telemetry:
    seq = seqs.get(machine.machine_id, 0)
    seqs[machine.machine_id] = seq + 1
    return Telemetry(
        site=machine.site,
        area=machine.area,
        line=machine.line,
        machine_id=machine.machine_id,
        seq=seq,
        source_ts=source_ts,
        read_ts=read_ts,
        ingest_ts=read_ts,
        signal=signal,
        value=value,
        unit=SIGNALS[signal].unit,
        quality=q,
        state_seq=state_seq,
    )


__all__ = ["FeedLog", "faulty_feed"]
