"""Alert events: the one place a detector's transition or a quality decision becomes an ``Alert``.

The stream's branches (``streaming/alert_branch.py``, ``streaming/quality_branch.py``) decide
*when* something is wrong; this module says how that is reported on ``factory.alerts``
(docs/alerts.md): the alert type of each rule, the deterministic identity (``alert_id`` and
``seq``), the evidence fields and a message a person can read without the code.

Identity.  ``alert_id`` is :func:`plantstream.domain.anomaly.alert_id` of (unit, subject,
kind, raise time): the same fault gives the same id on every replay, and the raise and the
clear share it.  ``seq`` is unique and increasing per unit (machine or line) and emitting
branch: ``branch << 56 | tracked_since_s << 20 | ordinal`` - the ordinal counts the unit's
alert events while the branch tracks the unit; ``tracked_since_s`` (the event time at which
tracking began) keeps the numbers unique when a unit whose state expired comes back, and
the branch bits keep the anomaly and quality branches (separate state) apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from plantstream.contract.events import Alert, AlertAction, AlertType, Severity
from plantstream.contract.signals import SIGNALS
from plantstream.domain.anomaly import (
    ALERT_TYPES,
    DEFAULT_LIMITS,
    TEMPERATURE_DIFFERENCE,
    Limits,
    LimitTable,
    Transition,
    alert_id,
)

#: The emitting branches (the top bits of ``seq``).
ANOMALY_BRANCH = 0
QUALITY_MACHINE_BRANCH = 1
QUALITY_LINE_BRANCH = 2

_SINCE_BITS = 36
_ORDINAL_BITS = 20
#: Kinds of the quality branch (``Alert.kind``); the anomaly kinds are ``anomaly.KINDS``.
SCRAP_RATE = "scrap_rate"
DEFECT_RUN = "defect_run"
#: The unit of the derived temperature difference (the others come from contract.signals).
_DERIVED_UNITS = {TEMPERATURE_DIFFERENCE: "K"}


def alert_seq(branch: int, tracked_since_ms: int, ordinal: int) -> int:
    """``seq`` of a unit's ``ordinal``-th alert event from ``branch`` (see the module docstring)."""
    if not 0 <= ordinal < 1 << _ORDINAL_BITS:
        raise ValueError(f"alert ordinal {ordinal} out of range (a unit's tracking period holds 2^20 alerts)")
    since = max(0, tracked_since_ms // 1000)
    return branch << (_SINCE_BITS + _ORDINAL_BITS) | since << _ORDINAL_BITS | ordinal


def line_unit(site: str, line: str) -> str:
    """The ``machine_id`` (and Kafka key) of a line-level alert: ``line:<site>/<line>``."""
    return f"line:{site}/{line}"


@dataclass(frozen=True, slots=True)
class Identity:
    """Where an alert's unit sits in the plant (ISA-95 envelope fields)."""

    site: str
    area: str
    line: str


def limit_table(overrides: Mapping[str, Mapping[str, Mapping[str, float]]]) -> LimitTable:
    """:data:`DEFAULT_LIMITS` with ``settings.alerts.limits`` laid over it (``"*"`` = every machine type).

    An override replaces the whole :class:`Limits` of its signal (a limit left out is off).
    """
    common = dict(DEFAULT_LIMITS.common)
    by_type = {k: dict(v) for k, v in DEFAULT_LIMITS.by_type.items()}
    for machine_type, signals in overrides.items():
        target = common if machine_type == "*" else by_type.setdefault(machine_type, {})
        for signal, values in signals.items():
            target[signal] = Limits(**values)
    return LimitTable(common, by_type)


def unit_of(signal: str) -> str:
    spec = SIGNALS.get(signal)
    return spec.unit if spec is not None else _DERIVED_UNITS.get(signal, "")


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _num(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no value"
    text = f"{value:.4g}"
    return f"{text} {unit}".rstrip() if unit and unit != "1" else text


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def transition_message(t: Transition) -> str:
    """What a transition means, with its numbers: which value crossed which threshold."""
    unit = unit_of(t.signal)
    e = t.evidence
    what = f"{t.machine_id} {t.signal}"
    if t.action == "clear":
        peak = "" if t.kind in ("stale", "dropout", "stuck") else f"; peak {_num(e.value, unit)}"
        return (
            f"{what}: {t.kind} cleared at {iso(t.ts_ms)} after {e.samples} anomalous readings "
            f"since {iso(e.first_ts_ms)}{peak}"
        )
    if t.kind == "spike":
        return (
            f"{what} spike: {_num(e.value, unit)} is {abs(e.statistic):.1f} robust standard deviations from the "
            f"baseline {_num(e.reference, unit)} (threshold {e.threshold:g})"
        )
    if t.kind == "limit":
        side = "above the high" if e.statistic > 0 else "below the low"
        return f"{what} {_num(e.value, unit)} {side} limit {_num(e.threshold, unit)} (engineering limit)"
    if t.kind == "rate":
        direction = "rising" if e.statistic > 0 else "falling"
        per_s = f"{unit}/s" if unit and unit != "1" else "/s"
        return (
            f"{what} {direction} at {abs(e.statistic):.4g} {per_s} (limit {abs(e.threshold):g} {per_s}; "
            f"from {_num(e.reference, unit)} to {_num(e.value, unit)})"
        )
    if t.kind == "stuck":
        return f"{what} stuck at {_num(e.value, unit)} for {e.samples} readings while the machine runs"
    if t.kind == "dropout":
        return f"{what}: no valid value for {e.samples} readings in a row since {iso(e.first_ts_ms)} (dropout)"
    if t.kind == "drift":
        direction = "up" if e.statistic > 0 else "down"
        return (
            f"{what} drifting {direction}: CUSUM {abs(e.statistic):.1f} of block medians reached {e.threshold:g} "
            f"(long-run mean {_num(e.reference, unit)}, latest {_num(e.value, unit)})"
        )
    return f"{what}: {t.kind} at {iso(t.ts_ms)}"


def transition_alert(t: Transition, identity: Identity, *, seq: int, concluded_ms: int) -> Alert:
    """The ``Alert`` of one detector transition (raise or clear) of one series."""
    e = t.evidence
    return Alert(
        site=identity.site,
        area=identity.area,
        line=identity.line,
        machine_id=t.machine_id,
        seq=seq,
        source_ts=t.ts_ms,
        read_ts=concluded_ms,
        ingest_ts=concluded_ms,
        alert_type=ALERT_TYPES[t.kind],
        severity=t.severity,
        message=transition_message(t)[:2048],
        signal=t.signal,
        attributes={"unit": unit_of(t.signal)} if unit_of(t.signal) else {},
        alert_id=t.alert_id,
        action=AlertAction(t.action),
        kind=t.kind,
        raised_at=t.raised_at_ms,
        value=_finite(e.value),
        threshold=_finite(e.threshold),
        statistic=_finite(e.statistic),
        reference=_finite(e.reference),
        window_start=e.first_ts_ms,
        window_end=e.last_ts_ms,
        samples=e.samples,
    )


def expired_alert(t: Transition, identity: Identity, *, seq: int, concluded_ms: int, idle_s: float) -> Alert:
    """The clear of an alert still open when its machine's state expired (no readings for ``idle_s``)."""
    alert = transition_alert(t, identity, seq=seq, concluded_ms=concluded_ms)
    message = (
        f"{t.machine_id} {t.signal}: {t.kind} cleared at {iso(t.ts_ms)}: no readings from the machine for "
        f"{idle_s:.0f} s, its detectors expired"
    )
    return _replace(alert, message=message, attributes={**alert.attributes, "reason": "expired"})


def machine_stale_alert(
    machine_id: str,
    identity: Identity,
    *,
    action: AlertAction,
    ts_ms: int,
    raised_at_ms: int,
    last_answer_ms: int | None,
    signals: int,
    seq: int,
    concluded_ms: int,
    expired: bool = False,
) -> Alert:
    """One ``MachineStale`` per machine: raised at the first stale marker, cleared when every
    signal of the machine reads again (or when the machine's state expires)."""
    silence_s = None if last_answer_ms is None else (raised_at_ms - last_answer_ms) / 1000
    if action is AlertAction.RAISE:
        since = "" if last_answer_ms is None else f" since {iso(last_answer_ms)}"
        message = f"{machine_id} stale: the device stopped answering{since} (stale marker at {iso(ts_ms)})"
        severity = Severity.CRITICAL
    elif expired:
        message = f"{machine_id} stale alert cleared at {iso(ts_ms)}: no readings for long, the machine's state expired"
        severity = Severity.INFO
    else:
        message = f"{machine_id} answers again: every stale signal ({signals}) reads valid values since {iso(ts_ms)}"
        severity = Severity.INFO
    return Alert(
        site=identity.site,
        area=identity.area,
        line=identity.line,
        machine_id=machine_id,
        seq=seq,
        source_ts=ts_ms,
        read_ts=concluded_ms,
        ingest_ts=concluded_ms,
        alert_type=AlertType.MACHINE_STALE,
        severity=severity,
        message=message,
        attributes={"reason": "expired"} if expired else {},
        alert_id=alert_id(machine_id, "", "stale", raised_at_ms),
        action=action,
        kind="stale",
        raised_at=raised_at_ms,
        statistic=silence_s,
        window_start=last_answer_ms if action is AlertAction.RAISE else raised_at_ms,
        window_end=ts_ms,
        samples=signals,
    )


def _replace(alert: Alert, **changes: object) -> Alert:
    return msgspec.structs.replace(alert, **changes)


__all__ = [
    "ANOMALY_BRANCH",
    "DEFECT_RUN",
    "QUALITY_LINE_BRANCH",
    "QUALITY_MACHINE_BRANCH",
    "SCRAP_RATE",
    "Identity",
    "alert_seq",
    "expired_alert",
    "limit_table",
    "line_unit",
    "machine_stale_alert",
    "transition_alert",
    "transition_message",
]
