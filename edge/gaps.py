"""Gap accounting: what the gateway produced against what Kafka holds, per machine.

The gateway's buffer database records, per machine, the next sequence number it will
assign: it produced ``0 .. next-1``.  A number is accounted for if it is in Kafka or
still waiting in the buffer; anything else is *missing* (dropped by the overflow
policy, deleted by hand, lost downstream) and reported as ranges.  Duplicates and
out-of-order events per machine are counted too.

Reading order matters for a running gateway: first the produced numbers, then the
buffer, then Kafka.  An event that leaves the buffer after it was read is in Kafka by
the time Kafka is read, so concurrent forwarding never shows up as a false gap.

Kafka is read to the end of each partition with ``enable.partition.eof`` (never the
broker's high watermark, which some brokers report wrongly).  Later waves extend the
comparison to the sinks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plantstream.connect.kafka import consumer
from plantstream.edge.buffer import EdgeStore
from plantstream.edge.kafka_scan import scan_keys
from plantstream.settings import Settings


@dataclass
class MachineGaps:
    produced: int
    in_kafka: int = 0
    pending: int = 0
    dropped_by_overflow: int = 0
    missing: int = 0
    missing_ranges: list[list[int]] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0


@dataclass
class GapReport:
    topic: str
    machines: dict[str, MachineGaps]
    kafka_messages_read: int
    seconds: float

    @property
    def missing(self) -> int:
        return sum(m.missing for m in self.machines.values())

    @property
    def duplicates(self) -> int:
        return sum(m.duplicates for m in self.machines.values())

    @property
    def out_of_order(self) -> int:
        return sum(m.out_of_order for m in self.machines.values())

    @property
    def pending(self) -> int:
        return sum(m.pending for m in self.machines.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "machines": {k: asdict(v) for k, v in sorted(self.machines.items())},
            "missing": self.missing,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "pending": self.pending,
            "kafka_messages_read": self.kafka_messages_read,
            "seconds": round(self.seconds, 3),
        }


def _ranges(flags: bytearray) -> list[list[int]]:
    out: list[list[int]] = []
    start = None
    for i, f in enumerate(flags):
        if f == 0 and start is None:
            start = i
        elif f != 0 and start is not None:
            out.append([start, i - 1])
            start = None
    if start is not None:
        out.append([start, len(flags) - 1])
    return out


def gap_report(
    settings: Settings, *, buffer_path: Path, topic: str | None = None, timeout_s: float = 300.0
) -> GapReport:
    """Compare the gateway's produced sequence numbers with the telemetry topic."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    t0 = time.monotonic()
    topic = topic or settings.stream.telemetry_topic
    if not buffer_path.exists():
        raise FileNotFoundError(f"no gateway state at {buffer_path}: has the gateway run with this state dir?")
    store = EdgeStore.open_readonly(buffer_path)
    try:
        produced = store.produced()
        pending = store.pending_seqs()
        dropped = store.dropped_counts()
    finally:
        store.close()
    # Per machine: covered (pending or in Kafka) and how often each number is in Kafka.
    covered = {m: bytearray(n) for m, n in produced.items()}
    in_kafka = {m: bytearray(n) for m, n in produced.items()}
    report = {m: MachineGaps(produced=n, dropped_by_overflow=dropped.get(m, 0)) for m, n in produced.items()}
    for machine, numbers in pending.items():
        flags = covered.get(machine)
        if flags is None:
            continue
        for s in numbers:
            if s < len(flags):
                flags[s] = 1
        report[machine].pending = len(numbers)
    last: dict[str, int] = {}
    read = 0
    cons = consumer(settings, **{"group.id": f"{settings.kafka.client_id}-edge-gaps", "enable.partition.eof": True})
    try:
        meta = cons.list_topics(topic, timeout=10)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise RuntimeError(f"topic {topic} not found in Kafka")
        partitions = sorted(meta.topics[topic].partitions)
        starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        for key in scan_keys(cons, topic, starts, timeout_s):
            read += 1
            if key is None:
                continue
            counts = in_kafka.get(key.machine_id)
            if counts is None or key.seq >= len(counts):
                continue
            entry = report[key.machine_id]
            entry.in_kafka += 1
            if counts[key.seq]:
                entry.duplicates += 1
            counts[key.seq] = min(counts[key.seq] + 1, 255)
            covered[key.machine_id][key.seq] = 1
            if key.seq < last.get(key.machine_id, -1):
                entry.out_of_order += 1
            last[key.machine_id] = key.seq
    finally:
        cons.close()
    for machine, flags in covered.items():
        gaps = _ranges(flags)
        report[machine].missing_ranges = gaps
        report[machine].missing = sum(b - a + 1 for a, b in gaps)
    return GapReport(topic, report, read, time.monotonic() - t0)
