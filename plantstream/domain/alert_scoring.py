"""Scoring alerts against the simulator's ground truth, and the offline evaluation that does it.

:func:`score_alerts` is the one definition of "was this alert right" (docs/anomaly.md,
"Scoring"): per fault kind the recall and the time to detect, per alert kind the precision,
for precursor alerts the lead time before failures.  It takes alert intervals and
:class:`~plantstream.simulator.ground_truth.GroundTruthEntry` records, so it scores any
detector - the stream's, the limits-only baseline, a model - on any ground-truth log.

The evaluation helpers (:func:`evaluation_plant`, :func:`simulate_telemetry`,
:func:`run_detectors`) step :class:`~plantstream.simulator.engine.PlantSimulator` directly
(no services) and turn its readings into what the stream's anomaly branch would see:
impossible values dead-lettered, dropouts as ``value=None, quality="bad"``, an offline
device as one ``quality="stale"`` marker per signal after the gateway's staleness delay,
the derived process - air temperature difference, and the machine's running state.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plantstream.contract.events import Quality
from plantstream.contract.signals import SIGNALS
from plantstream.domain.anomaly import (
    DERIVED_SIGNALS,
    QUALITY_CODES,
    TEMPERATURE_DIFFERENCE,
    DetectorBank,
    DetectorConfig,
    Transition,
)
from plantstream.simulator.engine import PlantSimulator, utc_ms
from plantstream.simulator.ground_truth import GroundTruthEntry
from plantstream.simulator.plant import default_plant
from plantstream.simulator.plant_config import (
    FaultConfig,
    PlannedDowntime,
    PlantConfig,
    RandomFaults,
    ScheduledFault,
    plant_from_machines,
)

# --------------------------------------------------------------------------------------
# Alerts and the matching rules
# --------------------------------------------------------------------------------------

SENSOR_FAULT_KINDS = ("stuck", "spike", "dropout")
FAULT_KINDS = (*SENSOR_FAULT_KINDS, "offline", "failure")

#: Which fault kinds an alert of each kind can detect.  ``limit`` alerts count for spikes and,
#: raised before a failure, as precursors; ``stale`` alerts (a detector's, or MachineStale)
#: detect devices that went offline.
DETECTS: dict[str, tuple[str, ...]] = {
    "spike": ("spike",),
    "limit": ("spike", "failure"),
    "rate": ("spike",),
    "stuck": ("stuck",),
    "dropout": ("dropout",),
    "stale": ("offline",),
    "drift": ("failure",),
}

#: A precursor alert on these signals matches failures of these modes (what the physics
#: makes them announce: docs/simulator.md, "Precursors").  RNF is random: nothing precedes it.
PRECURSOR_SIGNALS: dict[str, tuple[str, ...]] = {
    "TWF": ("vibration", "torque"),
    "OSF": ("vibration", "torque"),
    "HDF": (TEMPERATURE_DIFFERENCE, "process_temperature"),
    "PWF": ("torque", "rotational_speed", "power", "current"),
    "RNF": (),
}
#: Preventive tool changes end a tool's life like TWF does: a wear precursor before one is
#: not a false alarm (the tool was worn), so it is excluded rather than scored.
TOOL_WEAR_SIGNALS = ("vibration", "torque")


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One alert as scored: who, what, and when it was raised (and cleared, if it was)."""

    machine_id: str
    signal: str
    kind: str
    raised_at_ms: int
    cleared_at_ms: int | None = None


def alerts_from_transitions(transitions: Iterable[Transition]) -> list[AlertRecord]:
    """Pair each raise with its clear (same series, kind and raise time); open alerts have no clear."""
    clears: dict[tuple[str, str, str, int], int] = {}
    raises: list[Transition] = []
    for t in transitions:
        if t.action == "raise":
            raises.append(t)
        else:
            clears[(t.machine_id, t.signal, t.kind, t.raised_at_ms)] = t.ts_ms
    return [
        AlertRecord(
            t.machine_id, t.signal, t.kind, t.raised_at_ms, clears.get((t.machine_id, t.signal, t.kind, t.raised_at_ms))
        )
        for t in raises
    ]


@dataclass(frozen=True, slots=True)
class MatchingRules:
    """The matching rule (docs/anomaly.md, "Scoring").

    * a sensor or device fault ``[start, end]`` is detected by an alert of a kind that
      :data:`DETECTS` it, on the same machine (and the same signal, or a signal derived from
      it, when the fault names one), raised within ``[start, end + tolerance_ms]``;
    * a failure at ``t`` is anticipated by a precursor alert (``drift``, or ``limit``) on one
      of the :data:`PRECURSOR_SIGNALS` of its mode, on the same machine, raised within
      ``[t - horizon_ms, t]``;
    * an alert that matches nothing is a false positive - unless it was raised while the
      machine was in planned downtime, maintenance or a failure repair, or within
      ``settle_ms`` after one ended (the machine was changed on purpose), or it is a wear
      precursor within ``horizon_ms`` before a preventive tool change: those are excluded;
    * faults starting and alerts raised in the first ``warmup_ms`` (the detector is
      learning its baselines) or the last ``tail_ms`` (too late to be seen) of the run
      are not scored.
    """

    tolerance_ms: int = 30_000
    horizon_ms: int = 10 * 60_000
    settle_ms: int = 2 * 60_000
    warmup_ms: int = 15 * 60_000
    tail_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: str  # stuck/spike/dropout/offline/failure
    mode: str
    machine_id: str
    signal: str
    start_ms: int
    end_ms: int


@dataclass
class FaultKindScore:
    """Recall of one fault kind (or failure mode) and how fast it was detected."""

    faults: int = 0
    detected: int = 0
    detect_s: list[float] = field(default_factory=list)  # first matching alert - fault start (lead for failures)

    @property
    def recall(self) -> float | None:
        return self.detected / self.faults if self.faults else None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.detect_s) if self.detect_s else None

    def to_dict(self) -> dict[str, Any]:
        return {"faults": self.faults, "detected": self.detected, "recall": self.recall, "median_s": self.median_s}


@dataclass
class AlertKindScore:
    """Precision of one alert kind: matched alerts over scored (matched + false) alerts."""

    alerts: int = 0
    true: int = 0
    false: int = 0
    excluded: int = 0
    chance: list[float] = field(default_factory=list)  # precursors: chance of a match at a random time

    @property
    def precision(self) -> float | None:
        scored = self.true + self.false
        return self.true / scored if scored else None

    @property
    def chance_precision(self) -> float | None:
        return statistics.fmean(self.chance) if self.chance else None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "alerts": self.alerts,
            "true": self.true,
            "false": self.false,
            "excluded": self.excluded,
            "precision": self.precision,
        }
        if self.chance:
            out["chance_precision"] = self.chance_precision
        return out


@dataclass
class Scorecard:
    """Everything :func:`score_alerts` measured; ``to_dict()`` for JSON."""

    faults: dict[str, FaultKindScore]
    failure_modes: dict[str, FaultKindScore]
    alerts: dict[str, AlertKindScore]
    not_scored: dict[str, int]

    @property
    def precision(self) -> float | None:
        true = sum(a.true for a in self.alerts.values())
        scored = true + sum(a.false for a in self.alerts.values())
        return true / scored if scored else None

    def recall(self, kind: str) -> float:
        return self.faults[kind].recall or 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "faults": {k: v.to_dict() for k, v in self.faults.items()},
            "failure_modes": {k: v.to_dict() for k, v in self.failure_modes.items()},
            "alerts": {k: v.to_dict() for k, v in self.alerts.items()},
            "precision": self.precision,
            "not_scored": dict(self.not_scored),
        }


def _faults_and_exclusions(
    ground_truth: Iterable[GroundTruthEntry], rules: MatchingRules
) -> tuple[list[_Fault], dict[str, list[tuple[int, int]]], dict[str, list[int]], dict[str, int]]:
    faults: list[_Fault] = []
    exclusions: dict[str, list[tuple[int, int]]] = defaultdict(list)
    tool_changes: dict[str, list[int]] = defaultdict(list)
    other: dict[str, int] = defaultdict(int)
    for e in ground_truth:
        end = e.ts + round(e.duration_s * 1000)
        if e.kind == "sensor_fault" and e.mode in SENSOR_FAULT_KINDS:
            faults.append(_Fault(e.mode, e.mode, e.machine_id, e.signal, e.ts, end))
        elif e.kind == "device_fault":
            faults.append(_Fault("offline", e.mode, e.machine_id, "", e.ts, end))
        elif e.kind == "failure":
            faults.append(_Fault("failure", e.mode, e.machine_id, "", e.ts, e.ts))
            exclusions[e.machine_id].append((e.ts, end + rules.settle_ms))
        elif e.kind in ("maintenance", "planned_downtime"):
            exclusions[e.machine_id].append((e.ts, end + rules.settle_ms))
            if e.mode == "tool_change":
                tool_changes[e.machine_id].append(e.ts)
        else:
            other[f"{e.kind}:{e.mode}"] += 1
    return faults, exclusions, tool_changes, other


def _signal_matches(alert_signal: str, fault_signal: str) -> bool:
    return not fault_signal or alert_signal == fault_signal or fault_signal in DERIVED_SIGNALS.get(alert_signal, ())


def _covered_fraction(windows: list[tuple[int, int]], lo: int, hi: int) -> float:
    """Fraction of ``[lo, hi]`` covered by the union of ``windows``."""
    if hi <= lo:
        return 0.0
    covered, cursor = 0, lo
    for w_start, w_end in sorted(windows):
        a, b = max(w_start, cursor), min(w_end, hi)
        if b > a:
            covered += b - a
            cursor = b
    return covered / (hi - lo)


def score_alerts(
    alerts: Iterable[AlertRecord],
    ground_truth: Iterable[GroundTruthEntry],
    *,
    start_ms: int,
    end_ms: int,
    rules: MatchingRules | None = None,
    caught_upstream: Iterable[tuple[str, str, int]] = (),
) -> Scorecard:
    """Score alerts of a run ``[start_ms, end_ms)`` against its ground truth.

    ``caught_upstream``: ``(machine_id, signal, ts)`` of readings the stream rejected
    before detection (dead-lettered impossible values): a spike fault on such a reading
    was caught by validation and is reported under ``not_scored``, not held against the
    detector.
    """
    rules = rules or MatchingRules()
    lo, hi = start_ms + rules.warmup_ms, end_ms - rules.tail_ms
    faults, exclusions, tool_changes, other = _faults_and_exclusions(ground_truth, rules)
    upstream = set(caught_upstream)
    not_scored: dict[str, int] = defaultdict(int, other)
    scored_faults: list[_Fault] = []
    for f in faults:
        if not lo <= f.start_ms < hi:
            not_scored[f"{f.kind}:outside_scored_time"] += 1
        elif f.kind == "spike" and (f.machine_id, f.signal, f.start_ms) in upstream:
            not_scored["spike:caught_by_validation"] += 1
        else:
            scored_faults.append(f)
    by_machine: dict[str, list[_Fault]] = defaultdict(list)
    for f in scored_faults:
        by_machine[f.machine_id].append(f)
    all_failures: dict[str, list[_Fault]] = defaultdict(list)
    for f in faults:
        if f.kind == "failure":
            all_failures[f.machine_id].append(f)

    fault_scores = {k: FaultKindScore() for k in FAULT_KINDS}
    mode_scores: dict[str, FaultKindScore] = defaultdict(FaultKindScore)
    first_hit: dict[int, int] = {}  # id(fault) -> earliest matching raise
    alert_scores: dict[str, AlertKindScore] = defaultdict(AlertKindScore)
    for alert in alerts:
        score = alert_scores[alert.kind]
        t = alert.raised_at_ms
        if not lo <= t < end_ms:
            not_scored[f"alert:{alert.kind}:outside_scored_time"] += 1
            continue
        score.alerts += 1
        can_detect = DETECTS.get(alert.kind, ())
        matched = False
        for f in by_machine.get(alert.machine_id, ()):
            if f.kind not in can_detect:
                continue
            if f.kind == "failure":
                hit = (
                    alert.signal in PRECURSOR_SIGNALS.get(f.mode, ())
                    and f.start_ms - rules.horizon_ms <= t <= f.start_ms
                )
            else:
                hit = _signal_matches(alert.signal, f.signal) and f.start_ms <= t <= f.end_ms + rules.tolerance_ms
            if hit:
                matched = True
                key = id(f)
                first_hit[key] = min(first_hit.get(key, t), t)
        is_precursor = "failure" in can_detect
        if is_precursor:
            windows = [
                (f.start_ms - rules.horizon_ms, f.start_ms)
                for f in all_failures.get(alert.machine_id, ())
                if alert.signal in PRECURSOR_SIGNALS.get(f.mode, ())
            ]
            score.chance.append(_covered_fraction(windows, lo, end_ms))
        if matched:
            score.true += 1
        elif any(a <= t <= b for a, b in exclusions.get(alert.machine_id, ())) or (
            is_precursor
            and alert.signal in TOOL_WEAR_SIGNALS
            and any(c - rules.horizon_ms <= t <= c for c in tool_changes.get(alert.machine_id, ()))
        ):
            score.excluded += 1
        else:
            score.false += 1
    for f in scored_faults:
        fs = fault_scores[f.kind]
        fs.faults += 1
        ms = mode_scores[f.mode] if f.kind == "failure" else None
        if ms is not None:
            ms.faults += 1
        hit = first_hit.get(id(f))
        if hit is None:
            continue
        fs.detected += 1
        delay_s = (f.start_ms - hit) / 1000 if f.kind == "failure" else (hit - f.start_ms) / 1000
        fs.detect_s.append(delay_s)
        if ms is not None:
            ms.detected += 1
            ms.detect_s.append(delay_s)
    return Scorecard(
        fault_scores, dict(sorted(mode_scores.items())), dict(sorted(alert_scores.items())), dict(not_scored)
    )


# --------------------------------------------------------------------------------------
# Offline evaluation on a simulated plant
# --------------------------------------------------------------------------------------

#: Fault rates of the evaluation plant (per machine per simulated hour): high enough that a
#: 50-machine, 2-hour run has dozens of each kind.
EVAL_FAULTS = RandomFaults(stuck_per_h=0.3, spike_per_h=1.0, dropout_per_h=0.3, clock_skew_per_h=0.05)
EVAL_OFFLINE_PER_H = 0.2
EVAL_START_MS = utc_ms(2026, 3, 2)  # a Monday, 00:00 UTC: the planned downtime below is at 01:00


def evaluation_plant(
    machines: int = 50,
    *,
    hours: float = 2.0,
    seed: int = 7,
    faults: RandomFaults = EVAL_FAULTS,
    offline_per_h: float = EVAL_OFFLINE_PER_H,
) -> PlantConfig:
    """A faulty plant of ``machines`` load-generator machines (around the clock, AI4I mix).

    Random offline faults only hit machines behind a protocol endpoint, and these machines
    are kafka-direct; so device outages are drawn here (Poisson, their own random stream)
    and scheduled.  Lines 1 and 2 have a 15-minute planned cleaning at 01:00 UTC.
    """
    plant = plant_from_machines(default_plant(machines, "plant-1"), seed=seed)
    rng = np.random.default_rng([seed, 2])
    scheduled: list[ScheduledFault] = []
    for m in plant.machines():
        at_s = 0.0
        while offline_per_h > 0:
            at_s += float(rng.exponential(3600 / offline_per_h))
            if at_s >= hours * 3600:
                break
            scheduled.append(
                ScheduledFault(at_s=at_s, machine=m.machine_id, kind="offline", duration_s=faults.offline_s)
            )
    downtime = [PlannedDowntime(name="cleaning", start="01:00", duration_min=15, lines=["line-1", "line-2"])]
    return plant.with_faults(FaultConfig(random=faults, scheduled=scheduled)).model_copy(
        update={"planned_downtime": downtime}
    )


@dataclass
class SimulatedTelemetry:
    """The anomaly branch's view of a simulated run, as columns in arrival order.

    ``series[code] = (machine_id, signal, machine_type)``; ``caught_upstream`` lists the
    readings the stream would have dead-lettered (impossible values).
    """

    series: list[tuple[str, str, str]]
    code: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    quality: np.ndarray
    running: np.ndarray
    ground_truth: list[GroundTruthEntry]
    caught_upstream: list[tuple[str, str, int]]
    start_ms: int
    end_ms: int

    def __len__(self) -> int:
        return len(self.code)


def simulate_telemetry(
    plant: PlantConfig, *, hours: float, start_ms: int = EVAL_START_MS, stale_after_ms: int = 3_000
) -> SimulatedTelemetry:
    """Step the plant for ``hours`` and collect what the stream's anomaly branch would see.

    Per reading: impossible values (outside :mod:`plantstream.contract.signals` ranges) are
    dead-lettered; a dropout is ``NaN`` with quality bad; while a machine is offline nothing
    arrives except, once ``stale_after_ms`` after its last answer (the gateway's
    ``stale_multiple`` x interval), one stale marker per signal; machines with both
    temperatures also get the derived :data:`TEMPERATURE_DIFFERENCE` reading
    (process - air, paired by timestamp, only when both arrived).
    """
    sim = PlantSimulator(plant, start_ms)
    steps = round(hours * 3600 * 1000 / sim.period_ms)
    series: list[tuple[str, str, str]] = []
    layout: dict[str, list[tuple[str, int, float, float]]] = {}  # machine -> (signal, code, valid range)
    derived_code: dict[str, int] = {}
    code: list[int] = []
    ts: list[int] = []
    value: list[float] = []
    quality: list[int] = []
    running: list[int] = []
    ground_truth: list[GroundTruthEntry] = []
    upstream: list[tuple[str, str, int]] = []
    last_seen: dict[str, int] = {}
    marked_stale: set[str] = set()
    good, bad, stale = QUALITY_CODES["good"], QUALITY_CODES["bad"], QUALITY_CODES["stale"]
    nan = float("nan")

    def add(c: int, t: int, v: float, q: int, run: int) -> None:
        code.append(c)
        ts.append(t)
        value.append(v)
        quality.append(q)
        running.append(run)

    # the hot loop appends directly (bound methods): a call per reading costs as much as the rest
    add_c, add_t, add_v, add_q, add_r = code.append, ts.append, value.append, quality.append, running.append

    for _ in range(steps):
        snap = sim.step()
        ground_truth.extend(snap.ground_truth)
        for r in snap.readings:
            mid = r.machine.machine_id
            signals = layout.get(mid)
            if signals is None:
                signals = layout[mid] = []
                for s in r.values:
                    signals.append((s, len(series), SIGNALS[s].valid_min, SIGNALS[s].valid_max))
                    series.append((mid, s, r.machine.machine_type.value))
                if "process_temperature" in r.values and "air_temperature" in r.values:
                    derived_code[mid] = len(series)
                    series.append((mid, TEMPERATURE_DIFFERENCE, r.machine.machine_type.value))
            if not r.online:
                if mid not in marked_stale and snap.ts - last_seen.get(mid, snap.ts) > stale_after_ms:
                    marked_stale.add(mid)
                    for _s, c, _lo, _hi in signals:
                        add(c, snap.ts, nan, stale, -1)
                    if mid in derived_code:
                        add(derived_code[mid], snap.ts, nan, stale, -1)
                continue
            last_seen[mid] = snap.ts
            marked_stale.discard(mid)
            run = 1 if r.state == "running" else 0
            t = r.source_ts
            values, qualities = r.values, r.quality
            temps: dict[str, float] = {}
            for s, c, vmin, vmax in signals:
                v = values[s]
                if v is None:
                    v = nan
                    q = bad if qualities[s] is Quality.BAD else good
                elif vmin <= v <= vmax:
                    q = good
                else:
                    upstream.append((mid, s, snap.ts))
                    continue
                temps[s] = v
                add_c(c)
                add_t(t)
                add_v(v)
                add_q(q)
                add_r(run)
            dc = derived_code.get(mid)
            if dc is not None and "process_temperature" in temps and "air_temperature" in temps:
                diff = temps["process_temperature"] - temps["air_temperature"]  # NaN if either dropped out
                add(dc, t, diff, good if math.isfinite(diff) else bad, run)
    return SimulatedTelemetry(
        series=series,
        code=np.array(code, dtype=np.int64),
        ts=np.array(ts, dtype=np.int64),
        value=np.array(value, dtype=np.float64),
        quality=np.array(quality, dtype=np.int8),
        running=np.array(running, dtype=np.int8),
        ground_truth=ground_truth,
        caught_upstream=upstream,
        start_ms=start_ms,
        end_ms=start_ms + steps * sim.period_ms,
    )


def run_detectors(
    telemetry: SimulatedTelemetry,
    config_for: Callable[[str, str], DetectorConfig],
    *,
    batch_events: int = 10_000,
    bank: DetectorBank | None = None,
) -> list[Transition]:
    """Feed every series of a run to its detector in stream-like batches of many series.

    ``config_for(machine_type, signal)`` gives each series' rules (e.g.
    :func:`~plantstream.domain.anomaly.default_config`, or ``limits_only`` of it for the baseline).
    """
    bank = bank or DetectorBank()
    codes = np.array([bank.add(m, s, config_for(t, s)) for m, s, t in telemetry.series], dtype=np.int64)
    transitions: list[Transition] = []
    for i in range(0, len(telemetry), batch_events):
        j = i + batch_events
        result = bank.update_batch(
            codes[telemetry.code[i:j]],
            telemetry.ts[i:j],
            telemetry.value[i:j],
            telemetry.quality[i:j],
            telemetry.running[i:j],
        )
        transitions.extend(result.transitions)
    return transitions


def evaluate(
    telemetry: SimulatedTelemetry,
    config_for: Callable[[str, str], DetectorConfig],
    *,
    rules: MatchingRules | None = None,
    batch_events: int = 10_000,
) -> tuple[Scorecard, list[Transition]]:
    """Detect on a simulated run and score the alerts against its ground truth."""
    transitions = run_detectors(telemetry, config_for, batch_events=batch_events)
    card = score_alerts(
        alerts_from_transitions(transitions),
        telemetry.ground_truth,
        start_ms=telemetry.start_ms,
        end_ms=telemetry.end_ms,
        rules=rules,
        caught_upstream=telemetry.caught_upstream,
    )
    return card, transitions


def summary_rows(cards: Mapping[str, Scorecard]) -> list[dict[str, Any]]:
    """One row per fault kind with every detector's recall and median detection time (for tables)."""
    rows = []
    for kind in FAULT_KINDS:
        row: dict[str, Any] = {"kind": kind}
        for name, card in cards.items():
            fs = card.faults[kind]
            row[f"{name}_faults"] = fs.faults
            row[f"{name}_recall"] = fs.recall
            row[f"{name}_median_s"] = fs.median_s
        rows.append(row)
    return rows


__all__: Sequence[str] = [
    "DETECTS",
    "EVAL_FAULTS",
    "FAULT_KINDS",
    "PRECURSOR_SIGNALS",
    "AlertKindScore",
    "AlertRecord",
    "FaultKindScore",
    "MatchingRules",
    "Scorecard",
    "SimulatedTelemetry",
    "alerts_from_transitions",
    "evaluate",
    "evaluation_plant",
    "run_detectors",
    "score_alerts",
    "simulate_telemetry",
    "summary_rows",
]
