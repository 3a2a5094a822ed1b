"""Observations -> contract events (:class:`Telemetry`, and the machine tracker's derived
``MachineEvent``, ``QualityMetric`` and ``EnergyUsage``).

The unit comes from the one signal catalogue (``plantstream.contract.signals``), so a
reading from OPC UA, MQTT or Modbus looks the same downstream.  ``ingest_ts`` is left
0 here and set by the forwarder when the event is handed to Kafka, which is what the
contract means by it (a replayed event gets the time of its replay).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from plantstream.contract import Quality, Telemetry
from plantstream.contract.events import _Event
from plantstream.contract.signals import SIGNALS
from plantstream.contract.streams import stream_named
from plantstream.edge.collectors.base import Reading
from plantstream.edge.machine_tracker import Derived


@dataclass(frozen=True, slots=True)
class Identity:
    site: str
    area: str
    line: str
    machine_id: str


def to_telemetry(identity: Identity, reading: Reading, seq: int, state_seq: int | None = None) -> Telemetry:
    """``state_seq``: the latest machine event this gateway produced for the machine before
    the reading (the state it was read under), None before its first."""
    value = reading.value
    quality = reading.quality
    if value is not None and not math.isfinite(value):
        # NaN/inf cannot be JSON; a device reporting it has no usable value.
        value, quality = None, Quality.BAD
    spec = SIGNALS.get(reading.signal)
    return Telemetry(
        site=identity.site,
        area=identity.area,
        line=identity.line,
        machine_id=identity.machine_id,
        seq=seq,
        source_ts=reading.source_ts,
        read_ts=reading.read_ts,
        ingest_ts=0,
        signal=reading.signal,
        value=value,
        unit=spec.unit if spec else "",
        quality=quality,
        state_seq=state_seq,
    )


def stale_readings(machine_id: str, signals: list[str], read_ts: int) -> list[Reading]:
    """The explicit "no longer answering" marker: one stale reading per signal, no value."""
    return [Reading(machine_id, s, None, Quality.STALE, None, read_ts) for s in sorted(signals)]


def derived_event(identity: Identity, derived: Derived, seq: int) -> _Event:
    """The contract event of one of the tracker's outputs (its stream's payload type)."""
    payload = stream_named(derived.stream).payload
    return payload(
        site=identity.site,
        area=identity.area,
        line=identity.line,
        machine_id=identity.machine_id,
        seq=seq,
        source_ts=derived.source_ts,
        read_ts=derived.read_ts,
        ingest_ts=0,
        **derived.fields,
    )
