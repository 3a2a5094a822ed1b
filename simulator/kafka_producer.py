"""Produce a simulated plant straight to Kafka - every stream - and claim nothing Kafka does not hold.

The load generator (``plantstream simulate kafka``, ``demo --source direct``) bypasses the
edge for volume.  Its guarantee: when it reports success and advances its checkpoint,
every event of the run is in Kafka exactly once; otherwise it fails loudly and the
checkpoint stays where it was.

How:

* the run's events are generated up front (deterministic: the same checkpoint gives the
  same events), and the checkpoint records that a run is in progress and since when;
* they are produced through the idempotent producer, then **verified**: each stream's
  topic is read back from the run's start (``offsets_for_times``, to each partition's end
  with ``enable.partition.eof``, never the broker's high watermark) and every
  ``(machine, stream, seq)`` of the run must be there.  Delivery reports alone are not
  proof: a restarted local broker acknowledged writes it did not keep (docs/platform.md);
* what is missing is resent with a fresh producer, after a backoff, until everything is
  verified or ``simulator.produce_timeout_s`` has passed - an outage of the broker or of
  its storage is waited out, not counted as delivered;
* a run that failed (a crash, a timeout) is finished by the next one: it regenerates the
  same events and sends only those Kafka does not hold yet, so a rerun never duplicates
  the load in Kafka.

Ground truth of the run is written to a side file and appended to the plant's log only
on success, so a redone run is not recorded twice.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from plantstream.connect.kafka import consumer
from plantstream.connect.kafka import producer as kafka_producer
from plantstream.connect.kafka_scan import NotReadToEndError, scan_keys
from plantstream.connect.topics import ensure_topics
from plantstream.contract import Codec
from plantstream.contract.streams import STREAMS
from plantstream.contract.topics import message_key, topic_name
from plantstream.settings import Settings
from plantstream.simulator.checkpoint import SimulatorCheckpoint
from plantstream.simulator.ground_truth import GroundTruthLog
from plantstream.simulator.plant import default_plant
from plantstream.simulator.run import SimulationRun, generate_plant, plan_run, simulator_dir

log = logging.getLogger(__name__)
#: The run's start is moved back by this much to find its first possible offset (clocks).
CLOCK_MARGIN_MS = 60_000


@dataclass(frozen=True)
class ProduceReport:
    events: int  # in Kafka, verified (all streams)
    machines: int
    by_stream: dict[str, int]
    first_seq: dict[str, int]
    next_seq: dict[str, int]
    seconds: float
    resent: int = 0  # events sent again because Kafka did not hold them after a send
    simulated_s: float = 0.0


class DeliveryError(RuntimeError):
    """The run could not be verified in Kafka in time; nothing was committed."""


@dataclass
class _Outbox:
    """The run's events, encoded once, keyed by what identifies them in their topic."""

    topics: dict[str, str]
    pending: dict[tuple[str, str, int], tuple[bytes, bytes]] = field(default_factory=dict)

    def add(self, stream: str, machine_id: str, seq: int, payload: bytes) -> None:
        self.pending[(stream, machine_id, seq)] = (message_key(machine_id), payload)


def _send(settings: Settings, outbox: _Outbox, flush_timeout_s: float) -> None:
    """Hand everything pending to a fresh producer and wait for it (up to the timeout)."""
    prod = kafka_producer(settings)
    now = int(time.time() * 1000)
    codecs = {spec.name: Codec(spec.payload) for spec in STREAMS}
    rate = settings.simulator.produce_rate
    began = time.monotonic()
    for count, ((stream, _machine, _seq), (key, payload)) in enumerate(outbox.pending.items(), 1):
        if rate is not None and count % 100 == 0:
            ahead = count / rate - (time.monotonic() - began)
            if ahead > 0:
                prod.poll(ahead)  # paced: serve delivery reports while waiting
        codec = codecs[stream]
        value = codec.encode(msgspec.structs.replace(codec.decode(payload), ingest_ts=now))
        while True:
            try:
                prod.produce(outbox.topics[stream], value, key)
                break
            except BufferError:  # local queue full: let librdkafka drain a bit
                prod.poll(0.05)
        if count % 10_000 == 0:
            prod.poll(0)
    remaining = prod.flush(flush_timeout_s)
    if remaining:
        log.warning("%d events not acknowledged within %.0f s; verifying what Kafka holds", remaining, flush_timeout_s)
        prod.purge(in_queue=True, in_flight=True)
        prod.flush(0)


def _present(settings: Settings, outbox: _Outbox, since_ms: int, timeout_s: float) -> set[tuple[str, str, int]]:
    """Which pending ``(stream, machine, seq)`` each topic holds, read from ``since_ms``."""
    from confluent_kafka import OFFSET_END, TopicPartition

    wanted_streams = {stream for stream, _, _ in outbox.pending}
    found: set[tuple[str, str, int]] = set()
    group = f"{settings.kafka.client_id}-simulator-verify"
    cons = consumer(settings, **{"group.id": group, "enable.partition.eof": True})
    try:
        for stream in wanted_streams:
            topic = outbox.topics[stream]
            partitions = sorted(cons.list_topics(topic, timeout=10).topics[topic].partitions)
            starts = cons.offsets_for_times(
                [TopicPartition(topic, p, max(since_ms - CLOCK_MARGIN_MS, 0)) for p in partitions], timeout=10
            )
            starts = [tp for tp in starts if tp.offset >= 0 and tp.offset != OFFSET_END]
            for key in scan_keys(cons, topic, starts, timeout_s):
                if key is not None and (stream, key.machine_id, key.seq) in outbox.pending:
                    found.add((stream, key.machine_id, key.seq))
    finally:
        cons.close()
    return found


def produce_simulated_plant(
    settings: Settings, on_progress: Callable[[int, int], None] = lambda _done, _total: None
) -> ProduceReport:
    """Simulate up to ``settings.simulator.simulated_minutes`` (never past now) and put every
    event of every stream into Kafka, verified.  Raises :class:`DeliveryError` otherwise."""
    started = time.perf_counter()
    sim = settings.simulator
    ensure_topics(settings, tuple(spec.topic for spec in STREAMS))
    checkpoint = SimulatorCheckpoint(simulator_dir(settings) / "checkpoint.json")
    resumed = checkpoint.in_progress_run is not None  # an earlier attempt may have sent some already
    if resumed:
        run = _redo(settings, checkpoint.in_progress_run)
    else:
        run = plan_run(settings, resume_from_ms=checkpoint.clock_ms)
    since_ms = checkpoint.begin(
        int(time.time() * 1000), {"start_ms": run.start_ms, "steps": run.steps, "machines": len(run.machines)}
    )
    first_seq = checkpoint.peek()
    partial = simulator_dir(settings) / "ground_truth.partial.jsonl"
    partial.unlink(missing_ok=True)
    ground_truth = GroundTruthLog(partial)
    outbox = _Outbox({spec.name: topic_name(settings, spec.topic) for spec in STREAMS})
    codecs = {spec.name: Codec(spec.payload) for spec in STREAMS}
    try:
        for stream, event in generate_plant(settings, run, checkpoint, ground_truth):
            outbox.add(stream, event.machine_id, event.seq, codecs[stream].encode(event))
    finally:
        ground_truth.close()
    total = len(outbox.pending)
    by_stream = {spec.name: sum(1 for s, _, _ in outbox.pending if s == spec.name) for spec in STREAMS}
    if resumed and total:
        held = _present(settings, outbox, since_ms, sim.produce_timeout_s)
        for key in held:
            del outbox.pending[key]
        log.info("finishing an interrupted run: %d of its %d events are in Kafka already", len(held), total)
    deadline = time.monotonic() + sim.produce_timeout_s
    resent = 0
    delay = 0.5
    attempts = 0
    while outbox.pending:
        attempts += 1
        if attempts > 1:
            resent += len(outbox.pending)
        _send(settings, outbox, flush_timeout_s=max(5.0, min(120.0, deadline - time.monotonic())))
        on_progress(total - len(outbox.pending), total)
        try:
            for key in _present(settings, outbox, since_ms, max(5.0, deadline - time.monotonic())):
                del outbox.pending[key]
        except (NotReadToEndError, Exception) as exc:  # broker away: wait and verify again
            log.warning("could not verify the run in Kafka yet: %r", exc)
        if not outbox.pending:
            break
        if time.monotonic() > deadline:
            raise DeliveryError(
                f"{len(outbox.pending)} of {total} events not verified in Kafka within "
                f"{sim.produce_timeout_s:.0f} s; nothing committed (the next run finishes this one)"
            )
        log.warning("%d events are not in Kafka; resending in %.1f s", len(outbox.pending), delay)
        time.sleep(delay)
        delay = min(10.0, delay * 2) * random.uniform(0.8, 1.2)
    _append_ground_truth(partial, simulator_dir(settings) / "ground_truth.jsonl")
    checkpoint.commit(clock_ms=run.end_ms)
    on_progress(total, total)
    return ProduceReport(
        events=total,
        machines=len(run.machines),
        by_stream=by_stream,
        first_seq=first_seq,
        next_seq=checkpoint.peek(),
        seconds=time.perf_counter() - started,
        resent=resent,
        simulated_s=run.steps * run.period_ms / 1000,
    )


def _redo(settings: Settings, plan: dict[str, int] | None) -> SimulationRun:
    """The unfinished run exactly as planned (its start, length and machines), whatever
    the settings say now: only then are its events the ones Kafka may partly hold."""
    assert plan is not None
    machines = default_plant(plan["machines"], settings.site)
    return SimulationRun(machines, plan["steps"], plan["start_ms"], round(settings.simulator.sample_period_s * 1000))


def _append_ground_truth(partial, final) -> None:
    if partial.exists():
        with final.open("ab") as out:
            out.write(partial.read_bytes())
        partial.unlink()


__all__ = ["DeliveryError", "ProduceReport", "produce_simulated_plant"]
