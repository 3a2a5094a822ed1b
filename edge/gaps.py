"""Gap accounting: what the gateway produced against what Kafka holds, per machine and stream.

The gateway's buffer database records, per machine and stream (telemetry, machine
events, parts, energy: each numbered on its own), the next sequence number it will
assign: it produced ``0 .. next-1``.  A number is accounted for if it is in the
stream's topic or still waiting in the buffer; anything else is *missing* (dropped by
the overflow policy, deleted by hand, lost downstream) and reported as ranges.
Duplicates and out-of-order events per machine are counted too.

Reading order matters for a running gateway: first the produced numbers, then the
buffer, then Kafka.  An event that leaves the buffer after it was read is in Kafka by
the time Kafka is read, so concurrent forwarding never shows up as a false gap.

Kafka is read to the end of each partition with ``enable.partition.eof`` (never the
broker's high watermark, which some brokers report wrongly).  ``against="silver"``
compares with the lakehouse instead (the silver table of each stream: the end of the
path, after the stream and Dagster), and the report carries the incidents the stream
recorded on this host (a partition whose offsets the broker lost: plantstream/incidents.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from plantstream.connect.kafka import consumer
from plantstream.connect.kafka_scan import EventKey, scan_keys
from plantstream.contract.streams import STREAMS
from plantstream.contract.topics import topic_name
from plantstream.edge.buffer import EdgeStore
from plantstream.incidents import read_incidents
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
    topics: dict[str, str]  # stream -> topic
    entries: dict[tuple[str, str], MachineGaps]  # (machine_id, stream)
    kafka_messages_read: int
    seconds: float
    against: str = "kafka"
    incidents: list[dict[str, Any]] = field(default_factory=list)  # what the stream saw go wrong (offsets lost)

    def stream(self, name: str) -> dict[str, MachineGaps]:
        return {m: g for (m, s), g in sorted(self.entries.items()) if s == name}

    def missing_in(self, stream: str) -> int:
        return sum(g.missing for g in self.stream(stream).values())

    @property
    def machines(self) -> dict[str, MachineGaps]:
        """Telemetry's per-machine gaps (the report before the four streams)."""
        return self.stream("telemetry")

    @property
    def missing(self) -> int:
        return sum(m.missing for m in self.entries.values())

    @property
    def duplicates(self) -> int:
        return sum(m.duplicates for m in self.entries.values())

    @property
    def out_of_order(self) -> int:
        return sum(m.out_of_order for m in self.entries.values())

    @property
    def pending(self) -> int:
        return sum(m.pending for m in self.entries.values())

    def as_dict(self) -> dict[str, Any]:
        streams = {
            name: {
                "topic": topic,
                "missing": self.missing_in(name),
                "machines": {m: asdict(g) for m, g in self.stream(name).items()},
            }
            for name, topic in self.topics.items()
        }
        return {
            "machines": {k: asdict(v) for k, v in self.machines.items()},
            "streams": streams,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "pending": self.pending,
            "kafka_messages_read": self.kafka_messages_read,
            "against": self.against,
            "incidents": self.incidents,
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


Against = Literal["kafka", "silver"]


def _kafka_keys(settings: Settings, streams: set[str], timeout_s: float) -> Iterator[tuple[str, EventKey | None]]:
    """``(stream, key)`` of every message of each stream's topic, partition by partition in offset order."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    cons = consumer(settings, **{"group.id": f"{settings.kafka.client_id}-edge-gaps", "enable.partition.eof": True})
    try:
        for spec in STREAMS:
            if spec.name not in streams:
                continue
            topic = topic_name(settings, spec.topic)
            meta = cons.list_topics(topic, timeout=10)
            if topic not in meta.topics or meta.topics[topic].error is not None:
                raise RuntimeError(f"topic {topic} not found in Kafka")
            starts = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(meta.topics[topic].partitions)]
            for key in scan_keys(cons, topic, starts, timeout_s):
                yield spec.name, key
    finally:
        cons.close()


def _silver_keys(settings: Settings, streams: set[str]) -> Iterator[tuple[str, EventKey | None]]:
    """``(stream, key)`` of every row of each stream's silver table (unique per machine and seq)."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from plantstream.connect.s3 import delta_storage_options

    for spec in STREAMS:
        if spec.name not in streams:
            continue
        try:
            table = DeltaTable(
                settings.lake.table_uri("silver", spec.name), storage_options=delta_storage_options(settings)
            )
        except TableNotFoundError:
            continue
        rows = table.to_pyarrow_dataset().to_table(columns=["machine_id", "seq", "kafka_partition", "kafka_offset"])
        rows = rows.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])
        for machine, seq in zip(rows.column("machine_id").to_pylist(), rows.column("seq").to_pylist(), strict=True):
            yield spec.name, EventKey(machine, seq)


def gap_report(
    settings: Settings, *, buffer_path: Path, against: Against = "kafka", timeout_s: float = 300.0
) -> GapReport:
    """Compare the gateway's produced sequence numbers with every stream's topic, or with silver.

    ``against="silver"`` looks at the end of the path instead (what the lakehouse holds);
    run it once the stream has drained and silver is materialised, or events on their
    way show as missing.
    """
    t0 = time.monotonic()
    if not buffer_path.exists():
        raise FileNotFoundError(f"no gateway state at {buffer_path}: has the gateway run with this state dir?")
    store = EdgeStore.open_readonly(buffer_path)
    try:
        produced = store.produced()
        pending = store.pending_seqs()
        dropped = store.dropped_counts()
    finally:
        store.close()
    # Per (machine, stream): covered (pending or found) and how often each number was found.
    covered = {k: bytearray(n) for k, n in produced.items()}
    found = {k: bytearray(n) for k, n in produced.items()}
    report = {
        (m, s): MachineGaps(produced=n, dropped_by_overflow=dropped.get(m, 0) if s == "telemetry" else 0)
        for (m, s), n in produced.items()
    }
    for key, numbers in pending.items():
        flags = covered.get(key)
        if flags is None:
            continue
        for number in numbers:
            if number < len(flags):
                flags[number] = 1
        report[key].pending = len(numbers)
    streams = {s for _, s in produced}
    keys = _kafka_keys(settings, streams, timeout_s) if against == "kafka" else _silver_keys(settings, streams)
    read = 0
    last: dict[tuple[str, str], int] = {}
    for stream, key in keys:
        read += 1
        if key is None:
            continue
        entry_key = (key.machine_id, stream)
        counts = found.get(entry_key)
        if counts is None or key.seq >= len(counts):
            continue
        entry = report[entry_key]
        entry.in_kafka += 1
        if counts[key.seq]:
            entry.duplicates += 1
        counts[key.seq] = min(counts[key.seq] + 1, 255)
        covered[entry_key][key.seq] = 1
        if key.seq < last.get(entry_key, -1):
            entry.out_of_order += 1
        last[entry_key] = key.seq
    for key, flags in covered.items():
        gaps = _ranges(flags)
        report[key].missing_ranges = gaps
        report[key].missing = sum(b - a + 1 for a, b in gaps)
    topics = {spec.name: topic_name(settings, spec.topic) for spec in STREAMS}
    return GapReport(topics, report, read, time.monotonic() - t0, against=against, incidents=read_incidents(settings))
