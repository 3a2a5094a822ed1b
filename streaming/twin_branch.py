"""The digital-twin branch of the plant flow: Bytewax glue around ``streaming/twin.py``.

::

    telemetry, events, quality, energy (decoded, keyed by partition) ─┐
    factory.alerts (decoded: every branch's alerts)                   ├─► twin state per partition
    live OEE machine rows (oee_branch)                                ┘        │ changed machines,
                                                   ┌──────────────────────────┘ every twin_emit_interval_ms
                                                   ├─► factory.twin.state (keyed by machine_id, compacted)
                                                   └─► hot store twin_state (one row per machine in FINAL)

The alerts come back in through their topic rather than from the alert branches directly, so
the twin shows what every publisher of ``Alert`` says (the anomaly and quality branches, the
predictive-maintenance branch's ``MaintenanceRequired`` with its ``failure_probability``, a
person's acknowledgement tool) and no branch has to know about the twin.  The alerts topic
is keyed by ``machine_id`` with the streams' partition count, so a machine's alerts reach
the same partition's state; if its partition count differs, the twin runs without alerts
(a warning says so).

Locally the broker (Tansu) does not compact: ``factory.twin.state`` keeps every version of
every machine (and ignores ``retention.ms``), so a reader that replays it from the start
must keep the highest ``seq`` per key itself - which is also what makes it correct on a
compacted topic during a replay after a crash.  On a real Kafka the topic is compacted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import bytewax.operators as op
import pyarrow as pa
from bytewax.operators import StatefulBatchLogic

from plantstream.contract.streams import StreamSpec
from plantstream.contract.topics import ALERTS, TWIN_STATE, message_key, topic_name
from plantstream.settings import Settings
from plantstream.simulator.plant_config import load_plant
from plantstream.streaming.derived_sinks import DerivedTableSink, KeyedRecordSink
from plantstream.streaming.hot_tables import TWIN_STATE_TABLE
from plantstream.streaming.kafka_source import topic_partitions
from plantstream.streaming.plant_gauges import PLANT_GAUGES
from plantstream.streaming.twin import PartitionTwin, TwinConfig, TwinStates, twin_rows

log = logging.getLogger(__name__)

#: The alerts topic read back as an input of the twin (not one of the plant's four streams:
#: no raw table, no bronze).
ALERTS_FEED = StreamSpec("twin_alerts", ALERTS, frozenset())
TWIN_INPUT_STREAMS: tuple[str, ...] = ("telemetry", "events", "quality", "energy")
TWIN_INSERT_ROWS = 20_000
# The twin's rows wait at most this long for others (the writer checks twice as often), so
# a changed machine is in the hot store ~0.15 s after its emission at most.
TWIN_INSERT_MAX_DELAY_S = 0.1


class TwinLogic(StatefulBatchLogic[Any, TwinStates, dict]):
    """One :class:`PartitionTwin` per Kafka partition; emits by wall clock (``notify_at``)."""

    def __init__(self, config: TwinConfig, resume_state: dict | None) -> None:
        self.twin = PartitionTwin(config, resume_state)

    def _emit(self, *, force: bool = False) -> list[TwinStates]:
        states = self.twin.emit(force=force)
        return [states] if states is not None else []

    def on_batch(self, values: list[Any]) -> tuple[list[TwinStates], bool]:
        for item in values:
            self.twin.process(item)
        return self._emit(), StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[TwinStates], bool]:
        return self._emit(), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[TwinStates], bool]:
        return self._emit(force=True), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        at = self.twin.next_emit_at()
        return None if at is None else datetime.fromtimestamp(at, UTC)

    def snapshot(self) -> dict:
        return self.twin.snapshot()


def twin_inserts(items: list[TwinStates]) -> list[tuple[pa.Table, str]]:
    """One insert per call: the newest version of each machine, tokened by machines and versions."""
    newest: dict[str, tuple[Any, bytes]] = {}
    for item in items:
        for state, document in zip(item.states, item.documents, strict=True):
            known = newest.get(state.machine_id)
            if known is None or known[0].seq <= state.seq:
                newest[state.machine_id] = (state, document)
    if not newest:
        return []
    machines = sorted(newest)
    states = [newest[m][0] for m in machines]
    digest = hashlib.sha256("\n".join(f"{s.machine_id}:{s.seq}" for s in states).encode()).hexdigest()
    return [(twin_rows(states, [newest[m][1] for m in machines]), f"twin:{len(states)}:{digest}")]


def _twin_records(item: TwinStates) -> list[tuple[bytes, bytes]]:
    return [(message_key(s.machine_id), d) for s, d in zip(item.states, item.documents, strict=True)]


def _machines(item: TwinStates) -> int:
    return len(item.states)


def add_twin(
    inputs: Mapping[str, Any],
    settings: Settings,
    *,
    oee_rows: Any | None,
    stop_at_end: bool,
    flow: str = "plant",
) -> None:
    """Attach the digital twin to the flow's decoded streams (``inputs``: name -> ``StreamInput``),
    the live OEE machine rows (``oee_rows``, or ``None``) and the alerts topic."""
    from plantstream.streaming.plant_flow import stream_input  # plant_flow calls this module

    feeding = [inputs[name] for name in TWIN_INPUT_STREAMS if name in inputs]
    if not feeding:
        return
    dataflow = feeding[0].flow
    partitions = sorted(feeding[0].partitions)
    streams = [inp.decoded for inp in feeding]
    alerts_topic = topic_name(settings, ALERTS)
    if sorted(topic_partitions(settings, alerts_topic)) == partitions:
        alerts = stream_input(
            dataflow, settings, ALERTS_FEED, stop_at_end=stop_at_end, partitions=partitions, name=flow
        )
        streams.append(alerts.decoded)
    else:
        log.warning("%s has another partition count than the streams: the twin shows no alerts", alerts_topic)
    if oee_rows is not None:
        streams.append(oee_rows)
    config = TwinConfig.from_settings(settings, load_plant(settings.plant_file or None))
    states = op.stateful_batch("twin", op.merge("twin_in", *streams), lambda resume: TwinLogic(config, resume))
    states = op.inspect("twin_gauges", states, lambda _step, kv: PLANT_GAUGES.add_twins(kv[1]))
    op.output(
        "twin_topic_out",
        states,
        KeyedRecordSink(
            settings,
            topic_name(settings, TWIN_STATE),
            partitions,
            sink="twin_topic",
            records=_twin_records,
            flow=flow,
        ),
    )
    op.output(
        "twin_hot_out",
        states,
        DerivedTableSink(
            settings,
            partitions,
            table=TWIN_STATE_TABLE,
            sink="hot_twin",
            prepare=twin_inserts,
            rows_of=_machines,
            coalesce_rows=TWIN_INSERT_ROWS,
            max_delay_s=TWIN_INSERT_MAX_DELAY_S,
            flow=flow,
        ),
    )


__all__ = ["ALERTS_FEED", "add_twin", "twin_inserts"]
