"""The telemetry dataflow, assembled from reusable pieces.

    Kafka telemetry ──► decode + validate ──► dead letters ─────────────► factory.deadletter
     (one item per        (columns)       ├─► hot store telemetry_raw
      Kafka batch)                        ├─► bronze Delta table
                                          └─► windows (per partition) ─► hot store telemetry_windows
                                                                      └─► late events ─► factory.machine.telemetry.late

Composable: :func:`telemetry_input` adds the source, decoding and dead-lettering to any
``Dataflow`` and returns the decoded stream (keyed by Kafka partition); later branches
(machine events, anomalies, OEE, twin, inference) attach to ``TelemetryInput.decoded``
beside :func:`add_raw_sinks` and :func:`add_windows` without copying any of it.

Long-running mode with the Bytewax CLI (settings from ``PLANTSTREAM_*`` variables)::

    python -m bytewax.recovery .state/recovery/telemetry/factory.machine.telemetry 1      # once
    python -m bytewax.run "plantstream.streaming.telemetry_flow:flow_from_env()" \\
        -r .state/recovery/telemetry/factory.machine.telemetry -s 5 -b 30
"""

from __future__ import annotations

from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from plantstream.settings import Settings, load_settings
from plantstream.streaming.bronze_sink import BronzeTelemetrySink
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.hot_store_sink import HotRawSink, HotWindowSink
from plantstream.streaming.kafka_sink import KafkaRecordSink
from plantstream.streaming.kafka_source import KafkaBatchSource, RawBatch, topic_partitions
from plantstream.streaming.metrics import EVENTS_VALID
from plantstream.streaming.telemetry_decode import DecodedBatch, TelemetryDecoder
from plantstream.streaming.windowing import ClosedWindows, TelemetryWindowLogic, WindowConfig

FLOW_NAME = "telemetry"


@dataclass(frozen=True)
class TelemetryInput:
    """The decoded telemetry of a flow, ready for branches to attach to.

    ``decoded`` is keyed by the Kafka partition key, so stateful steps keyed on it keep
    their state on the worker that reads the partition.
    """

    flow: Dataflow
    topic: str
    partitions: list[int]
    decoded: op.KeyedStream[DecodedBatch]


def telemetry_input(
    flow: Dataflow,
    settings: Settings,
    *,
    stop_at_end: bool = False,
    partitions: list[int] | None = None,
    stats: FlowStats | None = None,
    name: str = FLOW_NAME,
) -> TelemetryInput:
    """Add the telemetry source, decoding/validation and the dead-letter sink to ``flow``."""
    topic = settings.stream.telemetry_topic
    if partitions is None:
        partitions = topic_partitions(settings, topic)
    source = KafkaBatchSource(settings, topic, partitions, stop_at_end=stop_at_end, flow=name)
    raw = op.input("telemetry_in", flow, source)
    decoder = TelemetryDecoder()
    valid_counter = EVENTS_VALID.labels(name)

    def decode(batch: RawBatch) -> DecodedBatch:
        decoded = decoder.decode(batch)
        valid_counter.inc(decoded.events.num_rows)
        if stats is not None:
            stats.add(events_in=len(batch), events_valid=decoded.events.num_rows)
        return decoded

    decoded = op.key_on("key_by_partition", op.map("decode", raw, decode), lambda b: b.key)
    dead_letters = op.flat_map_value("dead_letters", decoded, lambda b: b.dead_letters)
    op.output(
        "dead_letters_out",
        dead_letters,
        KafkaRecordSink(
            settings, settings.stream.dead_letter_topic, partitions, sink="dead_letters", stats=stats, flow=name
        ),
    )
    return TelemetryInput(flow, topic, partitions, decoded)


def add_raw_sinks(inp: TelemetryInput, settings: Settings, *, stats: FlowStats | None = None) -> None:
    """Valid events to the hot store's ``telemetry_raw`` and to the bronze Delta table."""
    op.output("hot_raw_out", inp.decoded, HotRawSink(settings, inp.partitions, stats=stats, flow=FLOW_NAME))
    op.output(
        "bronze_out",
        inp.decoded,
        BronzeTelemetrySink(settings, inp.topic, inp.partitions, stats=stats, flow=FLOW_NAME),
    )


def add_windows(inp: TelemetryInput, settings: Settings, *, stats: FlowStats | None = None) -> None:
    """Event-time window aggregates to ``telemetry_windows``; late events to the late topic."""
    config = WindowConfig.from_settings(settings)
    topic = inp.topic
    outputs = op.stateful_batch(
        "windows",
        inp.decoded,
        lambda resume: TelemetryWindowLogic(config, resume, topic=topic, flow=FLOW_NAME),
    )
    split = op.branch("closed_or_late", outputs, lambda kv: isinstance(kv[1], ClosedWindows))
    closed = split.trues
    if stats is not None:

        def count_emitted(_step: str, kv: tuple[str, ClosedWindows]) -> None:
            stats.add(windows_emitted=kv[1].aggregates.num_rows)

        closed = op.inspect("count_windows", closed, count_emitted)
    op.output("hot_windows_out", closed, HotWindowSink(settings, inp.partitions, stats=stats, flow=FLOW_NAME))
    op.output(
        "late_out",
        split.falses,
        KafkaRecordSink(settings, settings.stream.late_topic, inp.partitions, sink="late", stats=stats, flow=FLOW_NAME),
    )


def build_telemetry_flow(
    settings: Settings,
    *,
    stop_at_end: bool = False,
    stats: FlowStats | None = None,
    partitions: list[int] | None = None,
) -> Dataflow:
    """The telemetry dataflow (source → decode/DLQ → raw sinks + windows).

    ``stop_at_end``: drain mode - finish once every partition reached its end.  The
    input topic must exist (see :func:`plantstream.streaming.runner.prepare_telemetry_flow`).
    """
    flow = Dataflow(FLOW_NAME)
    inp = telemetry_input(flow, settings, stop_at_end=stop_at_end, partitions=partitions, stats=stats)
    add_raw_sinks(inp, settings, stats=stats)
    add_windows(inp, settings, stats=stats)
    return flow


def flow_from_env(stop_at_end: bool = False) -> Dataflow:
    """Factory for ``python -m bytewax.run "plantstream.streaming.telemetry_flow:flow_from_env()"``.

    Reads the settings from the environment, creates missing topics and hot tables, and
    builds the flow.  Pass ``flow_from_env(True)`` to drain and stop.
    """
    from plantstream.streaming.runner import prepare_telemetry_flow

    settings = load_settings()
    prepare_telemetry_flow(settings)
    return build_telemetry_flow(settings, stop_at_end=stop_at_end)
