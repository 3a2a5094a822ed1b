"""The event contract: versioned schemas of everything that crosses Kafka.

Every event carries the machine's identity (ISA-95 style site/area/line/machine), a
per-machine, per-stream sequence number ``seq`` (monotonic, gap-free at the source, so
sinks can deduplicate and loss is countable end to end) and three timestamps in epoch
milliseconds UTC:

* ``source_ts`` - when the device measured it (``None`` if the protocol gives none),
* ``read_ts`` - when the edge gateway read it,
* ``ingest_ts`` - when it was handed to Kafka.

Readings carry the source ``quality`` so that a value from a disconnected device is
never shown as fresh: a stale reading has ``quality="stale"`` and ``value=None``.

Encoding is JSON via msgspec (fast, human-readable, JSON Schema exportable).
Bump :data:`SCHEMA_VERSION` on incompatible changes; consumers dead-letter events
from a version they do not know yet rather than misreading them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import msgspec

SCHEMA_VERSION = 1

Millis = Annotated[int, msgspec.Meta(ge=0, le=32_503_680_000_000, description="epoch milliseconds, UTC")]
# Identity fields are length-checked only: a regex pattern here made decoding 4x slower
# (3 us instead of 0.8 us per event); which machines exist is checked against the plant.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Bounded to int64: every store keeps seq as a 64-bit integer, and a bigger number must be
# rejected here (dead letter) rather than fail a whole batch's conversion to columns.
INT64_MAX = 2**63 - 1
Seq = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX, description="per machine and stream, +1 per event")]


class Quality(StrEnum):
    """Source quality of a reading (OPC UA StatusCode classes, plus stale)."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"
    STALE = "stale"


class MachineEventType(StrEnum):
    """What a machine reports about itself or its state changes."""

    MACHINE_STARTED = "MachineStarted"
    MACHINE_STOPPED = "MachineStopped"
    CYCLE_COMPLETED = "CycleCompleted"
    FAULT_RAISED = "FaultRaised"
    MAINTENANCE_STARTED = "MaintenanceStarted"
    MAINTENANCE_ENDED = "MaintenanceEnded"


class AlertType(StrEnum):
    """What the stream concludes and tells people and the MES about."""

    QUALITY_ALERT = "QualityAlert"
    MAINTENANCE_REQUIRED = "MaintenanceRequired"
    ANOMALY_DETECTED = "AnomalyDetected"
    MACHINE_STALE = "MachineStale"
    SENSOR_FAULT = "SensorFault"  # the sensor, not the process: stuck values, dropouts


class AlertAction(StrEnum):
    """An alert is raised once and cleared once; both carry the alert's ``alert_id``."""

    RAISE = "raise"
    CLEAR = "clear"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class PartResult(StrEnum):
    GOOD = "good"
    SCRAP = "scrap"
    REWORK = "rework"


class _Event(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """Fields common to every event on every stream.

    ``gc=False``: events hold only scalars and str->scalar dicts, so they can never be
    part of a reference cycle; untracking them halves decode time of large batches.
    """

    v: Annotated[int, msgspec.Meta(ge=1, le=SCHEMA_VERSION)] = SCHEMA_VERSION
    site: Name
    area: Name
    line: Name
    machine_id: Name
    seq: Seq
    source_ts: Millis | None = None
    read_ts: Millis
    ingest_ts: Millis

    @property
    def event_ts(self) -> int:
        """Event time: the source's own timestamp when it has one, else the read time."""
        return self.source_ts if self.source_ts is not None else self.read_ts


class Telemetry(_Event, frozen=True):
    """One sampled value of one signal (``factory.machine.telemetry``).

    ``state_seq``: the ``seq`` (on ``factory.machine.events``) of the latest machine event
    the edge had produced for this machine when it took the reading - the machine state
    the value was read under.  A consumer that needs the state at a reading (a stopped
    drive legitimately reads 0) knows it as soon as it has seen that event, instead of
    waiting for the events stream to pass the reading's time.  None: the source does not
    say (no state tag, no state event yet, an older gateway).
    """

    signal: Name
    value: float | None
    unit: Annotated[str, msgspec.Meta(max_length=32)] = ""
    quality: Quality = Quality.GOOD
    state_seq: Seq | None = None


class MachineEvent(_Event, frozen=True):
    """A state change or occurrence reported by a machine (``factory.machine.events``)."""

    event_type: MachineEventType
    state: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    attributes: dict[str, str] = {}


class QualityMetric(_Event, frozen=True):
    """Inspection result of one part (``factory.quality.metrics``)."""

    part_id: Name
    result: PartResult
    product_variant: Annotated[str, msgspec.Meta(max_length=64)] = ""
    defect_code: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    measurements: dict[str, float] = {}


class EnergyUsage(_Event, frozen=True):
    """A power/energy meter reading (``factory.energy.usage``)."""

    power_kw: Annotated[float, msgspec.Meta(ge=0)]
    energy_kwh: Annotated[float, msgspec.Meta(ge=0, description="cumulative meter reading")]
    quality: Quality = Quality.GOOD


class Alert(_Event, frozen=True):
    """A conclusion drawn by the stream (``factory.alerts``; docs/alerts.md).

    One fault is one ``raise`` and one ``clear`` with the same ``alert_id``, a hash of what
    identifies the alert (machine, signal, kind, raise time): a replay after a crash
    produces the same ids, so a consumer drops copies by ``(alert_id, action)``.
    ``source_ts`` is the event time of the reading (or part) that raised or cleared it,
    ``read_ts`` when the stream concluded it.  The evidence says which value crossed which
    threshold over which window.  ``seq`` is unique and increasing per machine and
    emitting branch (docs/alerts.md, "Identity"); it is not gap-free.  Every field after
    ``attributes`` was added in v1 with a default (compatible).
    """

    alert_type: AlertType
    severity: Severity
    message: Annotated[str, msgspec.Meta(max_length=2048)]
    signal: Name | None = None
    attributes: dict[str, str] = {}
    alert_id: Annotated[str, msgspec.Meta(max_length=64)] = ""
    action: AlertAction = AlertAction.RAISE
    kind: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # the rule: spike, stuck, scrap_rate, ...
    raised_at: Millis | None = None  # event time of the raise (on a clear: of the raise it ends)
    value: float | None = None  # the value judged (raise) or the peak of the episode (clear)
    threshold: float | None = None  # the limit it crossed
    statistic: float | None = None  # what was compared with the threshold (z-score, rate, run length, ...)
    reference: float | None = None  # what the value was compared with (baseline centre, centre line, ...)
    window_start: Millis | None = None  # the evidence's window in event time
    window_end: Millis | None = None
    samples: Annotated[int, msgspec.Meta(ge=0)] | None = None  # readings (or parts) behind the evidence


class TwinSignal(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """The latest of one signal in a :class:`TwinState`.

    ``value`` is the last value measured (at ``value_ts``); ``quality`` and ``ts`` are those of
    the latest reading, which may be a stale marker without a value.  ``stale`` is true when
    that reading is ``stale`` or older than the twin's stale limit at ``TwinState.source_ts``:
    a stale value is shown as stale, never as fresh (readers also compare ``ts`` with their
    own clock: ``plantstream.streaming.twin_query``).
    """

    value: float | None
    value_ts: Millis | None = None
    unit: Annotated[str, msgspec.Meta(max_length=32)] = ""
    quality: Quality
    ts: Millis
    stale: bool


class TwinAlert(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """An alert of the machine that is open (raised, not cleared) in a :class:`TwinState`."""

    alert_id: Annotated[str, msgspec.Meta(max_length=64)]
    alert_type: AlertType
    severity: Severity
    kind: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    signal: Name | None = None
    message: Annotated[str, msgspec.Meta(max_length=2048)] = ""
    raised_ts: Millis


class TwinOee(msgspec.Struct, kw_only=True, frozen=True, gc=False):
    """OEE of the machine's current shift so far (live OEE's latest row), or of the shift just closed."""

    shift: Name
    shift_start_ts: Millis
    as_of_ts: Millis
    final: bool
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    performance_above_one: bool = False


class TwinState(_Event, frozen=True):
    """The digital twin of one machine: its latest known state (``factory.twin.state``).

    Keyed by ``machine_id`` on a compacted topic: the latest record of a key is the machine's
    state.  ``seq`` is the twin's version of the machine (it grows with every update, not by
    one): a reader keeps, per machine, the record with the highest ``seq`` (after a crash
    the stream may publish older versions again).  ``source_ts`` is the newest event time the
    state reflects, ``read_ts`` when the stream computed it.  ``failure_probability`` is the
    predictive-maintenance score, once a branch publishes one (docs/predictive-maintenance.md).
    """

    stale: bool = False
    state: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    reason: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    state_since_ts: Millis | None = None
    signals: dict[str, TwinSignal] = {}
    shift: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    shift_start_ts: Millis | None = None
    parts_total: Annotated[int, msgspec.Meta(ge=0)] = 0
    parts_good: Annotated[int, msgspec.Meta(ge=0)] = 0
    parts_scrap: Annotated[int, msgspec.Meta(ge=0)] = 0
    last_part_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    last_part_result: PartResult | None = None
    last_part_ts: Millis | None = None
    power_kw: float | None = None
    energy_kwh: float | None = None
    energy_ts: Millis | None = None
    oee: TwinOee | None = None
    open_alerts: list[TwinAlert] = []
    failure_probability: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    failure_probability_ts: Millis | None = None


EVENT_TYPES: tuple[type[_Event], ...] = (Telemetry, MachineEvent, QualityMetric, EnergyUsage, Alert, TwinState)
