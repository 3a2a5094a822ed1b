"""The topic catalogue: names, payload types, keys and configs of every topic.

Every topic is keyed by ``machine_id`` so one machine's events stay in one partition,
in order.  Configs are explicit (retention, cleanup policy) because some clients read
them back and some brokers only report what was set at creation.  A deployment may put
a prefix before every name (``PLANTSTREAM_KAFKA__TOPIC_PREFIX``): :func:`topic_name` is
the one place names are resolved.  Creating topics (which needs a broker) lives in
:mod:`plantstream.connect.topics`; this module only describes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plantstream.contract.events import Alert, EnergyUsage, MachineEvent, QualityMetric, Telemetry, TwinState, _Event
from plantstream.contract.promotions import FailureScore, ModelPromotion
from plantstream.settings import Settings

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    payload: type[_Event] | type[ModelPromotion] | type[FailureScore] | None
    description: str
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: str = "delete"
    extra_config: dict[str, str] = field(default_factory=dict)
    key: str = "machine_id"  # what the message key holds

    def config(self) -> dict[str, str]:
        conf = {
            "retention.ms": str(self.retention_ms),
            "retention.bytes": "-1",
            "cleanup.policy": self.cleanup_policy,
        }
        conf.update(self.extra_config)
        return conf


TELEMETRY = TopicSpec("factory.machine.telemetry", Telemetry, "sampled sensor values, one signal per event")
MACHINE_EVENTS = TopicSpec("factory.machine.events", MachineEvent, "state changes and occurrences")
QUALITY_METRICS = TopicSpec("factory.quality.metrics", QualityMetric, "inspection result per part")
ENERGY_USAGE = TopicSpec("factory.energy.usage", EnergyUsage, "power and energy meter readings")
ALERTS = TopicSpec("factory.alerts", Alert, "alerts derived by the stream (QualityAlert, MaintenanceRequired, ...)")
DEAD_LETTERS = TopicSpec(
    "factory.deadletter",
    None,
    "rejected messages: original key and bytes, reason and origin in headers",
    retention_ms=30 * DAY_MS,
)
LATE_EVENTS = TopicSpec(
    "factory.machine.telemetry.late",
    Telemetry,
    "telemetry later than the allowed lateness of its window: kept, not lost",
    retention_ms=30 * DAY_MS,
)
MODEL_PROMOTIONS = TopicSpec(
    "factory.models.promotions",
    ModelPromotion,
    "the failure model's champion alias moved (promotion or rollback): the stream swaps models",
    retention_ms=365 * DAY_MS,
    key="registered model name",
)
FAILURE_SCORES = TopicSpec(
    "factory.models.scores",
    FailureScore,
    "the stream's failure probabilities: one per machine and sample time, with the model version that scored it",
)
TWIN_STATE = TopicSpec(
    "factory.twin.state",
    TwinState,
    "the digital twin: each machine's latest known state (compacted: the latest record per machine)",
    cleanup_policy="compact",
)

CATALOGUE: tuple[TopicSpec, ...] = (
    TELEMETRY,
    MACHINE_EVENTS,
    QUALITY_METRICS,
    ENERGY_USAGE,
    ALERTS,
    DEAD_LETTERS,
    LATE_EVENTS,
    MODEL_PROMOTIONS,
    FAILURE_SCORES,
    TWIN_STATE,
)


def message_key(machine_id: str) -> bytes:
    """The partitioning key of every PlantStream message."""
    return machine_id.encode()


def topic_name(settings: Settings, topic: TopicSpec) -> str:
    """The name ``topic`` has in this deployment (the catalogue name behind the prefix)."""
    return settings.kafka.topic_prefix + topic.name


def partitions_for(settings: Settings, topic: TopicSpec) -> int:
    return settings.kafka.topic_partitions.get(topic.name, settings.kafka.default_partitions)
