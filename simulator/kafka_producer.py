"""Produce simulated telemetry straight to Kafka (the walking skeleton's path).

The edge issue replaces this with simulator -> OPC UA / MQTT / Modbus -> gateway ->
Kafka; this direct producer stays for load tests and benchmarks.

Delivery: at-least-once through an idempotent producer (``acks=all``, no local
expiry); sequence numbers are committed to disk only after Kafka acknowledged every
event, so a crash re-sends rather than skips, and the sinks deduplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from plantstream.connect.kafka import producer as kafka_producer
from plantstream.contract import Codec, Telemetry
from plantstream.contract.topics import message_key
from plantstream.settings import Settings
from plantstream.simulator.checkpoint import SimulatorCheckpoint
from plantstream.simulator.ground_truth import GroundTruthLog
from plantstream.simulator.run import generate_telemetry, plan_run, simulator_dir


@dataclass(frozen=True)
class ProduceReport:
    events: int
    machines: int
    first_seq: dict[str, int]
    next_seq: dict[str, int]
    seconds: float


class DeliveryError(RuntimeError):
    pass


def produce_simulated_telemetry(
    settings: Settings,
    topic: str | None = None,
    on_progress: Callable[[int, int], None] = lambda _done, _total: None,
) -> ProduceReport:
    """Simulate ``settings.simulator.simulated_minutes`` and produce every reading to ``topic``.

    The default topic is the one the stream reads (``settings.stream.telemetry_topic``).
    """
    topic = settings.stream.telemetry_topic if topic is None else topic
    import time

    started = time.perf_counter()
    checkpoint = SimulatorCheckpoint(simulator_dir(settings) / "checkpoint.json")
    run = plan_run(settings, resume_from_ms=checkpoint.clock_ms)
    first_seq = checkpoint.peek()
    ground_truth = GroundTruthLog(simulator_dir(settings) / "ground_truth.jsonl")
    codec = Codec(Telemetry)
    producer = kafka_producer(settings)
    delivered = 0
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:  # librdkafka delivery report
        nonlocal delivered
        if err is None:
            delivered += 1
        else:
            errors.append(str(err))

    produced = 0
    try:
        for event in generate_telemetry(settings, run, checkpoint, ground_truth):
            value = codec.encode(event)
            while True:
                try:
                    producer.produce(topic, value, message_key(event.machine_id), on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: let librdkafka drain a bit
                    producer.poll(0.05)
            produced += 1
            if produced % 10_000 == 0:
                producer.poll(0)
                on_progress(produced, run.events)
        remaining = producer.flush(120)
    finally:
        ground_truth.close()
    if remaining or errors or delivered != produced:
        raise DeliveryError(
            f"{produced} produced, {delivered} acknowledged, {remaining} still queued, errors: {errors[:3]}"
        )
    checkpoint.commit(clock_ms=run.end_ms)
    on_progress(produced, run.events)
    return ProduceReport(
        events=delivered,
        machines=len(run.machines),
        first_seq={m.machine_id: first_seq.get(m.machine_id, 0) for m in run.machines},
        next_seq=checkpoint.peek(),
        seconds=time.perf_counter() - started,
    )
