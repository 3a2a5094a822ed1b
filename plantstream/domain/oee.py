"""OEE: the one definition the live stream and the lakehouse both compute.

Classic Nakajima / Vorne OEE from *time per (machine state, reason)* and *part counts*
(the full rationale, the worked example and how to call it are in ``docs/oee.md``)::

    planned production time = run time + unplanned stop time   (planned stops excluded)
    availability = run time / planned production time
    performance  = ideal cycle time x total count / run time    (not capped at 1)
    quality      = good count / total count
    OEE          = availability x performance x quality

The time waterfall behind it, in seconds (each step is a loss the result breaks out)::

    period - planned stops             = planned production time
    planned production - unplanned     = run time            (availability loss, by reason)
    run - performance loss             = net run time        = ideal cycle x total count
    net run - quality loss             = fully productive    = ideal cycle x good count

The functions are pure: no I/O, plain Python numbers and mappings in, a frozen
dataclass out.  Bytewax operators and Dagster assets call them; neither re-implements
any of it:

* :func:`durations_in_window` clips state intervals ``[start_ms, end_ms)`` to a window
  and sums seconds per ``(state, reason)``;
* :func:`oee` turns those durations and the part counts into an :class:`OeeResult`;
* :func:`combine` rolls results up (machines into a line, shifts into a day) from their
  times and counts, never by averaging ratios.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

from plantstream.contract.machine_tags import MACHINE_STATES

__all__ = [
    "MACHINE_STATES",
    "Durations",
    "OeeResult",
    "StateInterval",
    "StopClass",
    "classify_stop",
    "combine",
    "durations_in_window",
    "oee",
]

"""The machine states of the project (docs/simulator.md); anything else is refused."""

OFF_SHIFT = "off_shift"
PLANNED_PREFIX = "planned:"

StopClass = Literal["run", "planned_stop", "unplanned_stop"]

Durations = Mapping[tuple[str, str | None], float] | Iterable[tuple[str, str | None, float]]
"""Seconds per ``(state, reason)``: a mapping, or ``(state, reason, seconds)`` triples (repeats add up)."""

# Floating-point sums of durations are not exact; a performance of 1 + 1e-15 is 1.
_REL_TOL = 1e-9


def classify_stop(state: str, reason: str | None) -> StopClass:
    """Classify time in ``state`` with ``reason`` for OEE.  The one place this rule lives.

    * ``running`` is run time, whatever the reason says (a running machine is producing);
    * otherwise a reason ``off_shift`` or ``planned:<name>`` (scheduled downtime such as
      cleaning, from the plant's calendar) is a *planned stop*: it is not planned
      production time and costs no availability;
    * every other non-running time is an *unplanned stop*, an availability loss:
      ``idle``/``starved`` micro-stops, ``stopped``/``failure:*`` repairs, ``maintenance``/
      ``tool_change`` (wear-triggered, not scheduled), and stops without a reason.

    ``reason`` ``None`` and ``""`` mean "no reason".  An unknown state raises
    ``ValueError``: callers map their source's states (PackML, UMH codes, ...) onto
    :data:`MACHINE_STATES` before calling, so no time is classified by accident.
    """
    if state not in MACHINE_STATES:
        raise ValueError(f"unknown machine state {state!r}: expected one of {', '.join(MACHINE_STATES)}")
    if state == "running":
        return "run"
    if reason == OFF_SHIFT or (reason or "").startswith(PLANNED_PREFIX):
        return "planned_stop"
    return "unplanned_stop"


class StateInterval(NamedTuple):
    """A machine was in ``state`` (with ``reason``) from ``start_ms`` until just before ``end_ms``."""

    state: str
    reason: str | None
    start_ms: int
    end_ms: int


def durations_in_window(
    intervals: Iterable[StateInterval | tuple[str, str | None, int, int]],
    window_start_ms: int,
    window_end_ms: int,
) -> dict[tuple[str, str], float]:
    """Seconds per ``(state, reason)`` of one machine's state intervals inside a window.

    Intervals are half-open, ``[start_ms, end_ms)`` in epoch milliseconds, clipped to
    ``[window_start_ms, window_end_ms)``: an interval crossing the window's start or end
    counts only its part inside; intervals outside are ignored.  A ``None`` reason
    becomes ``""``.  Time the intervals do not cover (no state known) is in no bucket:
    compare the sum with the window length to see it.

    Raises ``ValueError`` if the window or an interval ends before it starts, or if two
    intervals overlap inside the window (one machine is in one state at a time: an
    overlap means duplicated or inconsistent events, which would count time twice).
    For a line, call this per machine and :func:`combine` the results.
    """
    if window_end_ms < window_start_ms:
        raise ValueError(f"window ends before it starts: [{window_start_ms}, {window_end_ms})")
    clipped: list[tuple[int, int, str, str]] = []
    for state, reason, start_ms, end_ms in intervals:
        if end_ms < start_ms:
            raise ValueError(f"interval ({state!r}, {reason!r}) ends before it starts: [{start_ms}, {end_ms})")
        start, end = max(start_ms, window_start_ms), min(end_ms, window_end_ms)
        if end > start:
            clipped.append((start, end, state, reason or ""))
    clipped.sort()
    durations: dict[tuple[str, str], float] = {}
    previous_end, previous_key = window_start_ms, ("", "")
    for start, end, state, reason in clipped:
        if start < previous_end:
            raise ValueError(
                f"state intervals overlap inside the window: {previous_key} until {previous_end} and "
                f"{(state, reason)} from {start} (duplicated or inconsistent state events?)"
            )
        previous_end, previous_key = end, (state, reason)
        durations[state, reason] = durations.get((state, reason), 0.0) + (end - start) / 1000.0
    return durations


@dataclass(frozen=True, slots=True)
class OeeResult:
    """OEE of one period, its components, its time waterfall and its losses.

    Ratios are fractions (0.85, not 85 %) or ``None`` when undefined (see :func:`oee`).
    Times are seconds.  Picklable (it crosses Bytewax workers) and :meth:`as_dict`
    gives plain JSON types for a hot-table row or Dagster metadata.
    """

    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None
    period_s: float
    """All time given: planned production time + planned stop time."""
    planned_production_s: float
    """Run time + unplanned stop time."""
    run_s: float
    planned_stop_s: float
    unplanned_stop_s: float
    net_run_s: float
    """Ideal cycle time x total count: the run time the parts needed at ideal speed."""
    fully_productive_s: float
    """Ideal cycle time x good count."""
    availability_loss_s: dict[str, float]
    """Unplanned stop seconds by reason (the state's name where there was no reason); sums to ``unplanned_stop_s``."""
    performance_loss_s: float
    """Run time - net run time; negative when performance is above 1."""
    quality_loss_s: float
    """Ideal cycle time x scrap count."""
    planned_stop_by_reason_s: dict[str, float]
    """Planned stop seconds by reason (excluded from OEE, reported for completeness)."""
    total_count: int
    good_count: int
    scrap_count: int
    ideal_cycle_s: float | None
    """The ideal cycle time used; ``None`` for a :func:`combine` of different ideal cycle times."""
    nothing_planned: bool
    """No planned production time (the whole period was planned stops, or no time given): every ratio is ``None``."""
    performance_above_one: bool
    """Performance > 1: more parts than the ideal cycle time allows; the ideal cycle time is probably wrong."""
    warnings: tuple[str, ...]
    """Human-readable explanations of the flags and of inconsistent inputs."""

    def as_dict(self) -> dict[str, Any]:
        """Plain ``dict`` / ``list`` / ``float`` / ``int`` / ``bool`` / ``None`` values, JSON-serialisable."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["availability_loss_s"] = dict(self.availability_loss_s)
        out["planned_stop_by_reason_s"] = dict(self.planned_stop_by_reason_s)
        out["warnings"] = list(self.warnings)
        return out


def oee(durations: Durations, *, ideal_cycle_s: float, total_count: int, good_count: int) -> OeeResult:
    """OEE of one machine over one period.

    ``durations`` are seconds per ``(state, reason)`` (e.g. from
    :func:`durations_in_window`), classified by :func:`classify_stop`.
    ``ideal_cycle_s`` is the theoretical fastest cycle per part; ``total_count`` the parts
    completed in the period, ``good_count`` those of them that are good.

    Undefined ratios are ``None``, never a division by zero:

    * no planned production time: availability, performance, quality and OEE are all
      ``None`` and ``nothing_planned`` is set;
    * no run time (but planned time): availability 0.0, performance ``None``, OEE 0.0
      (availability 0 means nothing was produced in planned time);
    * no parts: quality ``None``; performance is 0.0 if there was run time, so OEE is 0.0.

    Performance above 1 is returned as it is, with ``performance_above_one`` and a
    warning.  Raises ``ValueError`` for negative or non-finite durations, a
    non-positive ideal cycle time, negative counts, or ``good_count > total_count``.
    """
    ideal = _positive_seconds(ideal_cycle_s, "ideal_cycle_s")
    total = _count(total_count, "total_count")
    good = _count(good_count, "good_count")
    if good > total:
        raise ValueError(f"good_count ({good}) is greater than total_count ({total})")

    if isinstance(durations, Mapping):
        triples: Iterable[tuple[str, str | None, float]] = (
            (state, reason, seconds) for (state, reason), seconds in durations.items()
        )
    else:
        triples = durations
    run_s = 0.0
    planned: dict[str, float] = {}
    unplanned: dict[str, float] = {}
    for state, reason, value in triples:
        seconds = _seconds(value, f"duration of ({state!r}, {reason!r})")
        kind = classify_stop(state, reason)
        if kind == "run":
            run_s += seconds
        else:
            bucket = planned if kind == "planned_stop" else unplanned
            label = reason or state
            bucket[label] = bucket.get(label, 0.0) + seconds
    return _result(
        run_s=run_s,
        planned=planned,
        unplanned=unplanned,
        net_run_s=ideal * total,
        fully_productive_s=ideal * good,
        total=total,
        good=good,
        ideal_cycle_s=ideal,
    )


def combine(results: Iterable[OeeResult]) -> OeeResult:
    """Roll results up: machines into a line, shifts into a day, days into a week.

    Times, counts, net run and fully productive times are summed and the ratios are
    recomputed from the sums (averaging OEE figures would weight a short shift like a
    long one).  Performance is therefore the summed ideal time over the summed run time.
    Quality is ``fully productive / net run time``, i.e. good parts weighted by their
    ideal cycle time, so that OEE = A x P x Q = fully productive / planned production
    time still holds; it equals ``good / total`` when all inputs share one ideal cycle
    time.  ``performance_above_one`` is set if any input had it (a warning counts them:
    a line's total can hide one machine's wrong ideal cycle time).  Warnings are those of
    the combined figures.  Raises ``ValueError`` for no results.
    """
    results = list(results)
    if not results:
        raise ValueError("combine() needs at least one OeeResult")
    planned: dict[str, float] = {}
    unplanned: dict[str, float] = {}
    for r in results:
        for label, seconds in r.planned_stop_by_reason_s.items():
            planned[label] = planned.get(label, 0.0) + seconds
        for label, seconds in r.availability_loss_s.items():
            unplanned[label] = unplanned.get(label, 0.0) + seconds
    ideals = {r.ideal_cycle_s for r in results}
    above_one = sum(r.performance_above_one for r in results)
    inherited = (
        [f"{above_one} of {len(results)} combined results have performance above 1 (ideal cycle time probably wrong)"]
        if above_one
        else []
    )
    return _result(
        run_s=math.fsum(r.run_s for r in results),
        planned=planned,
        unplanned=unplanned,
        net_run_s=math.fsum(r.net_run_s for r in results),
        fully_productive_s=math.fsum(r.fully_productive_s for r in results),
        total=sum(r.total_count for r in results),
        good=sum(r.good_count for r in results),
        ideal_cycle_s=ideals.pop() if len(ideals) == 1 else None,
        inherited_warnings=inherited,
        any_above_one=bool(above_one),
    )


def _result(
    *,
    run_s: float,
    planned: dict[str, float],
    unplanned: dict[str, float],
    net_run_s: float,
    fully_productive_s: float,
    total: int,
    good: int,
    ideal_cycle_s: float | None,
    inherited_warnings: list[str] | None = None,
    any_above_one: bool = False,
) -> OeeResult:
    planned_stop_s = math.fsum(planned.values())
    unplanned_stop_s = math.fsum(unplanned.values())
    planned_production_s = run_s + unplanned_stop_s
    warnings = list(inherited_warnings or [])

    availability = performance = quality = value = None
    above_one = any_above_one
    nothing_planned = planned_production_s <= 0.0
    if nothing_planned:
        warnings.append(
            "nothing was planned: no planned production time (the period is all planned stops or off shift, "
            "or no state time was given); every ratio is undefined"
        )
        if total:
            warnings.append(f"{total} parts counted although nothing was planned")
    else:
        availability = run_s / planned_production_s
        if total:
            # With one ideal cycle time this is good / total exactly; a combine() weights by ideal time.
            quality = good / total if ideal_cycle_s is not None else fully_productive_s / net_run_s
        if run_s > 0.0:
            performance = net_run_s / run_s
            value = availability * performance * (quality if quality is not None else 0.0)
            if performance > 1.0 and not math.isclose(net_run_s, run_s, rel_tol=_REL_TOL):
                above_one = True
                ideal = f"{ideal_cycle_s:g} s" if ideal_cycle_s is not None else "the ideal cycle times"
                warnings.append(
                    f"performance {performance:.4f} > 1: the parts need {net_run_s:g} s at {ideal} but the "
                    f"machine ran only {run_s:g} s; the ideal cycle time is probably too long (or run time is "
                    "missing); within one cycle it can be a part that straddles the window start"
                )
        else:
            value = 0.0
            if total:
                warnings.append(
                    f"{total} parts counted without run time (a part finishing at the window edge, "
                    "or missing state events?); performance is undefined, OEE is 0"
                )

    return OeeResult(
        availability=availability,
        performance=performance,
        quality=quality,
        oee=value,
        period_s=planned_production_s + planned_stop_s,
        planned_production_s=planned_production_s,
        run_s=run_s,
        planned_stop_s=planned_stop_s,
        unplanned_stop_s=unplanned_stop_s,
        net_run_s=net_run_s,
        fully_productive_s=fully_productive_s,
        availability_loss_s=unplanned,
        performance_loss_s=run_s - net_run_s,
        quality_loss_s=net_run_s - fully_productive_s,
        planned_stop_by_reason_s=planned,
        total_count=total,
        good_count=good,
        scrap_count=total - good,
        ideal_cycle_s=ideal_cycle_s,
        nothing_planned=nothing_planned,
        performance_above_one=above_one,
        warnings=tuple(warnings),
    )


def _seconds(value: float, what: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _positive_seconds(value: float, what: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{what} must be a finite number of seconds > 0, got {value!r}")
    return seconds


def _count(value: int, what: str) -> int:
    try:
        count = operator.index(value)  # int, or numpy integers from pandas callers; not 3.5
    except TypeError:
        raise ValueError(f"{what} must be a whole number, got {value!r}") from None
    if count < 0:
        raise ValueError(f"{what} must be >= 0, got {count}")
    return count
