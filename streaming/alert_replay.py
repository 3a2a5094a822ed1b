"""Replay recorded events through the alert branches' pure cores: no Kafka, no Bytewax.

What the stream's alert branches would conclude from a recording - for the scoring run
(``plantstream alerts score``: the limits-only baseline, and a check that the real branch
concluded exactly this), for tests (the reference a crashed and resumed flow must equal)
and for a notebook.  Events are encoded and decoded with the stream's own decoder
(``StreamDecoder``: the same dead letters, the same columns), then fed in chunks:
the branches' results do not depend on the chunking (docs/alerts.md, "Replays").
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from plantstream.contract import Codec
from plantstream.contract.events import Alert, _Event
from plantstream.contract.streams import STREAMS, StreamSpec, stream_named
from plantstream.streaming.alert_branch import AnomalyConfig, PartitionAnomalies
from plantstream.streaming.kafka_source import RawBatch
from plantstream.streaming.quality_branch import LineScrap, PartitionQuality, QualityConfig
from plantstream.streaming.stream_decode import DecodedBatch, StreamDecoder


class Decoder:
    """Contract events -> :class:`DecodedBatch` per stream and partition, with running offsets."""

    def __init__(self, *, max_event_time_ahead_s: float = 300.0) -> None:
        self._codecs = {s.name: Codec(s.payload) for s in STREAMS}
        self._decoders = {s.name: StreamDecoder(s, max_event_time_ahead_s=max_event_time_ahead_s) for s in STREAMS}
        self._offsets: dict[tuple[str, int], int] = defaultdict(int)

    def batch(self, stream: str, events: Sequence[_Event], partition: int = 0) -> DecodedBatch:
        spec: StreamSpec = stream_named(stream)
        values = [self._codecs[stream].encode(e) for e in events]
        first = self._offsets[(stream, partition)]
        self._offsets[(stream, partition)] = first + len(values)
        keys = [e.machine_id.encode() for e in events]
        raw = RawBatch(spec.topic.name, partition, np.arange(first, first + len(values), dtype=np.int64), keys, values)
        return self._decoders[stream].decode(raw)


def chunked(
    steps: Iterable[list[tuple[str, _Event]]], steps_per_chunk: int, decoder: Decoder, partition_of=lambda _m: 0
) -> Iterable[list[DecodedBatch]]:
    """Group a step-wise feed into chunks of decoded batches (per stream and partition, in order)."""
    chunk: dict[tuple[str, int], list[_Event]] = defaultdict(list)
    n = 0
    for step in steps:
        for stream, event in step:
            chunk[(stream, partition_of(event.machine_id))].append(event)
        n += 1
        if n == steps_per_chunk:
            yield [decoder.batch(s, evs, p) for (s, p), evs in chunk.items()]
            chunk, n = defaultdict(list), 0
    if chunk:
        yield [decoder.batch(s, evs, p) for (s, p), evs in chunk.items()]


class AlertReplay:
    """Both branches' cores, one per partition (and the lines), fed decoded batches."""

    def __init__(
        self, anomaly: AnomalyConfig | None, quality: QualityConfig | None, partitions: Sequence[int] = (0,)
    ) -> None:
        self.anomaly = {p: PartitionAnomalies(anomaly, clock=lambda: 0.0) for p in partitions} if anomaly else {}
        self.quality = (
            {p: PartitionQuality(quality, partition=p, clock=lambda: 0.0) for p in partitions} if quality else {}
        )
        self.lines = LineScrap(quality, list(partitions), clock=lambda: 0.0) if quality else None
        self.alerts: list[Alert] = []

    def feed(self, batches: list[DecodedBatch]) -> list[Alert]:
        out: list[Alert] = []
        by_partition: dict[int, list[DecodedBatch]] = defaultdict(list)
        for b in batches:
            by_partition[b.partition].append(b)
        for p, bs in sorted(by_partition.items()):
            if p in self.anomaly:
                out.extend(self.anomaly[p].process([b for b in bs if b.stream.name in ("telemetry", "events")]))
            if p in self.quality:
                alerts, counts = self.quality[p].process([b for b in bs if b.stream.name == "quality"])
                out.extend(alerts)
                if self.lines is not None:
                    out.extend(self.lines.process(counts))
        self.alerts.extend(out)
        return out

    def finish(self) -> list[Alert]:
        """End of input: the anomaly branches judge what still waits (as the flow does at its end)."""
        out = [a for core in self.anomaly.values() for a in core.flush()]
        self.alerts.extend(out)
        return out


__all__ = ["AlertReplay", "Decoder", "chunked"]
