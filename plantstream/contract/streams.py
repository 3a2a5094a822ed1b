"""The four streams of plant data, each declared once.

A stream is what the plant says about itself on one topic: its contract type, its
Kafka topic (keyed by ``machine_id``), and the tables it lands in - a hot-store table
(``<name>_raw``), a bronze and a silver Delta table (``bronze/<name>``, ``silver/<name>``).
Everything generic iterates over :data:`STREAMS`: the stream's source, decoding and
dead letters, the hot-store and bronze sinks, the silver asset, the gap report and the
demo's counts.  Adding a fifth stream means a contract type, a topic and one entry
here (plus whatever is specific to it, such as a validation rule).

Every stream numbers its events per machine (``seq`` is per machine *and stream*), so
loss is countable per stream end to end.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantstream.contract.events import _Event
from plantstream.contract.topics import ALERTS, ENERGY_USAGE, MACHINE_EVENTS, QUALITY_METRICS, TELEMETRY, TopicSpec

#: String columns every stream stores with few distinct values (ISA-95 identity, enums).
_IDENTITY_LOW_CARDINALITY = frozenset({"machine_id", "site", "area", "line", "quality"})


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One stream: its name (also its tables' name), topic and contract type.

    ``low_cardinality`` names the string columns a column store should dictionary-encode
    (ClickHouse ``LowCardinality``); the other strings (part ids, free text) are plain.
    """

    name: str
    topic: TopicSpec
    low_cardinality: frozenset[str]

    @property
    def payload(self) -> type[_Event]:
        assert self.topic.payload is not None, f"topic {self.topic.name} has no contract type"
        return self.topic.payload

    @property
    def hot_table(self) -> str:
        return f"{self.name}_raw"


TELEMETRY_STREAM = StreamSpec("telemetry", TELEMETRY, _IDENTITY_LOW_CARDINALITY | {"signal", "unit"})
EVENTS_STREAM = StreamSpec("events", MACHINE_EVENTS, _IDENTITY_LOW_CARDINALITY | {"event_type", "state"})
QUALITY_STREAM = StreamSpec("quality", QUALITY_METRICS, _IDENTITY_LOW_CARDINALITY | {"result", "product_variant"})
ENERGY_STREAM = StreamSpec("energy", ENERGY_USAGE, _IDENTITY_LOW_CARDINALITY)

STREAMS: tuple[StreamSpec, ...] = (TELEMETRY_STREAM, EVENTS_STREAM, QUALITY_STREAM, ENERGY_STREAM)

#: Derived by the stream's alert branches (docs/alerts.md), not plant data: not in STREAMS
#: (no source, no bronze table); its hot table is ``alerts`` (streaming/hot_tables.py).
ALERTS_STREAM = StreamSpec(
    "alerts", ALERTS, _IDENTITY_LOW_CARDINALITY | {"alert_type", "severity", "action", "kind", "signal"}
)


def stream_named(name: str) -> StreamSpec:
    for spec in STREAMS:
        if spec.name == name:
            return spec
    raise KeyError(f"no stream {name!r}; streams: {[s.name for s in STREAMS]}")
