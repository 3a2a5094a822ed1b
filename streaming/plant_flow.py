"""The plant dataflow: every stream through one generic path, plus telemetry's windows.

    Kafka <stream> ──► decode + validate ──► dead letters ─────────────► factory.deadletter
     (one item per      (columns of the      ├─► hot store <stream>_raw
      Kafka batch)       stream's contract)   ├─► bronze/<stream> Delta table
                                              └─► (telemetry) windows ─► hot store telemetry_windows
                                                                      └─► late events ─► ….telemetry.late

Each stream of :data:`plantstream.contract.streams.STREAMS` gets the same pieces
(:func:`stream_input`, :func:`add_raw_sinks`); nothing here is written per stream.
Branches (windows today; anomalies, OEE, the twin and inference later) attach to a
:class:`StreamInput`'s ``decoded`` stream without copying the source or the decoding.
All inputs are keyed by Kafka partition, and every stream keys its topic by
``machine_id`` with the same partition count, so partition *p* of every stream - one
machine's telemetry, events, parts and energy - lands on the same worker.

Long-running mode with the Bytewax CLI (settings from ``PLANTSTREAM_*`` variables)::

    python -m bytewax.run "plantstream.streaming.plant_flow:flow_from_env()" -r <recovery dir> -s 30 -b 0

(``plantstream stream`` and ``python -m plantstream.streaming.runner`` do this for you.)
"""

from __future__ import annotations

from dataclasses import dataclass

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from plantstream.contract.streams import EVENTS_STREAM, QUALITY_STREAM, STREAMS, TELEMETRY_STREAM, StreamSpec
from plantstream.contract.topics import DEAD_LETTERS, LATE_EVENTS, topic_name
from plantstream.settings import Settings, load_settings
from plantstream.streaming import metrics
from plantstream.streaming.alert_branch import add_anomaly_alerts
from plantstream.streaming.bronze_sink import BronzeSink
from plantstream.streaming.failure_scoring import add_failure_scoring
from plantstream.streaming.flow_stats import FlowStats
from plantstream.streaming.hot_store_sink import HotRawSink, HotWindowSink
from plantstream.streaming.kafka_sink import KafkaRecordSink
from plantstream.streaming.kafka_source import KafkaBatchSource, RawBatch, topic_partitions
from plantstream.streaming.metrics import EVENTS_VALID
from plantstream.streaming.oee_branch import add_live_oee
from plantstream.streaming.plant_gauges import PLANT_GAUGES
from plantstream.streaming.quality_branch import add_quality_alerts
from plantstream.streaming.stream_decode import DecodedBatch, StreamDecoder
from plantstream.streaming.twin_branch import add_twin
from plantstream.streaming.windowing import ClosedWindows, TelemetryWindowLogic, WindowConfig, kafka_replay

FLOW_NAME = "plant"


@dataclass(frozen=True)
class StreamInput:
    """The decoded events of one stream in a flow, ready for branches to attach to.

    ``decoded`` is keyed by the Kafka partition key, so stateful steps keyed on it keep
    their state on the worker that reads the partition.
    """

    flow: Dataflow
    spec: StreamSpec
    topic: str
    partitions: list[int]
    decoded: op.KeyedStream[DecodedBatch]


def stream_input(
    flow: Dataflow,
    settings: Settings,
    spec: StreamSpec,
    *,
    stop_at_end: bool = False,
    partitions: list[int] | None = None,
    stats: FlowStats | None = None,
    name: str = FLOW_NAME,
) -> StreamInput:
    """Add ``spec``'s source, decoding/validation and its dead-letter sink to ``flow``."""
    topic = topic_name(settings, spec.topic)
    if partitions is None:
        partitions = topic_partitions(settings, topic)
    source = KafkaBatchSource(settings, topic, partitions, stop_at_end=stop_at_end, flow=name)
    raw = op.input(f"{spec.name}_in", flow, source)
    decoder = StreamDecoder.from_settings(spec, settings)
    valid_counter = EVENTS_VALID.labels(name, topic)
    stream = spec.name

    def decode(batch: RawBatch) -> DecodedBatch:
        decoded = decoder.decode(batch)
        valid_counter.inc(decoded.events.num_rows)
        metrics.observe_decoded(FLOW_NAME, decoded.events)
        if stats is not None:
            stats.add(stream, events_in=len(batch), events_valid=decoded.events.num_rows)
        return decoded

    decoded = op.key_on(f"{stream}_by_partition", op.map(f"{stream}_decode", raw, decode), lambda b: b.key)
    dead_letters = op.flat_map_value(f"{stream}_dead_letters", decoded, lambda b: b.dead_letters)
    op.output(
        f"{stream}_dead_letters_out",
        dead_letters,
        KafkaRecordSink(
            settings,
            topic_name(settings, DEAD_LETTERS),
            partitions,
            sink="dead_letters",
            stats=stats,
            flow=name,
            stream=stream,
        ),
    )
    return StreamInput(flow, spec, topic, partitions, decoded)


def add_raw_sinks(inp: StreamInput, settings: Settings, *, stats: FlowStats | None = None) -> None:
    """Valid events to the stream's hot-store table and its bronze Delta table."""
    name = inp.spec.name
    op.output(
        f"{name}_hot_out", inp.decoded, HotRawSink(settings, inp.spec, inp.partitions, stats=stats, flow=FLOW_NAME)
    )
    op.output(
        f"{name}_bronze_out",
        inp.decoded,
        BronzeSink(settings, inp.spec, inp.topic, inp.partitions, stats=stats, flow=FLOW_NAME),
    )


def add_windows(
    inp: StreamInput, settings: Settings, *, stats: FlowStats | None = None
) -> op.KeyedStream[ClosedWindows]:
    """Event-time window aggregates to ``telemetry_windows``; late events to the late topic.

    Returns the closed windows, for branches that read them (failure scoring)."""
    config = WindowConfig.from_settings(settings)
    topic = inp.topic
    replay = kafka_replay(settings, topic)
    outputs = op.stateful_batch(
        "windows",
        inp.decoded,
        lambda resume: TelemetryWindowLogic(config, resume, topic=topic, flow=FLOW_NAME, replay=replay),
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
        KafkaRecordSink(
            settings, topic_name(settings, LATE_EVENTS), inp.partitions, sink="late", stats=stats, flow=FLOW_NAME
        ),
    )
    return split.trues


def build_plant_flow(
    settings: Settings,
    *,
    stop_at_end: bool = False,
    stats: FlowStats | None = None,
    streams: tuple[StreamSpec, ...] = STREAMS,
) -> Dataflow:
    """The plant dataflow: every stream's source → decode/DLQ → raw sinks; telemetry's windows.

    ``stop_at_end``: drain mode - finish once every partition of every input reached its
    end.  The topics must exist (see :func:`plantstream.streaming.runner.prepare_flow`).
    """
    flow = Dataflow(FLOW_NAME)
    PLANT_GAUGES.clear()  # one plant flow per process: forget an earlier flow's lines and machines
    inputs: dict[str, StreamInput] = {}
    windows = None
    for spec in streams:
        inp = inputs[spec.name] = stream_input(flow, settings, spec, stop_at_end=stop_at_end, stats=stats)
        add_raw_sinks(inp, settings, stats=stats)
        if spec is TELEMETRY_STREAM:
            windows = add_windows(inp, settings, stats=stats)
    if TELEMETRY_STREAM.name in inputs:
        events = inputs.get(EVENTS_STREAM.name)
        add_anomaly_alerts(inputs[TELEMETRY_STREAM.name], settings, events=events, stats=stats, flow=FLOW_NAME)
    if QUALITY_STREAM.name in inputs:
        add_quality_alerts(inputs[QUALITY_STREAM.name], settings, stats=stats, flow=FLOW_NAME)
    oee_rows = add_live_oee(inputs, settings, flow=FLOW_NAME)
    add_twin(inputs, settings, oee_rows=oee_rows, stop_at_end=stop_at_end, flow=FLOW_NAME)
    add_failure_scoring(inputs, windows, settings, flow=FLOW_NAME)  # only with a champion (models.stream_scoring)
    return flow


def flow_from_env(stop_at_end: bool = False) -> Dataflow:
    """Factory for ``python -m bytewax.run "plantstream.streaming.plant_flow:flow_from_env()"``.

    Reads the settings from the environment, creates missing topics and tables, and
    builds the flow.  Pass ``flow_from_env(True)`` to drain and stop.
    """
    from plantstream.streaming.runner import prepare_flow

    settings = load_settings()
    prepare_flow(settings)
    return build_plant_flow(settings, stop_at_end=stop_at_end)
