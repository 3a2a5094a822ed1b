"""``plantstream alerts score``: the stream's alerts scored against the simulator's ground truth.

Why a separate run from ``benchmarks/anomaly.py``: that one scores the per-series detector
on columns it prepares itself; this one scores what the plant flow *publishes*.  The
evaluation plant (:func:`~plantstream.domain.alert_scoring.evaluation_plant`: 50 machines,
random stuck / spike / dropout faults, device outages, a planned cleaning, AI4I failures)
is stepped by :func:`~plantstream.simulator.faulty_feed.faulty_feed` into contract events
the way the edge forwards them, encoded and decoded by the stream's own decoder and fed to
the anomaly branch's per-partition cores (:class:`~plantstream.streaming.alert_replay.AlertReplay`:
running state from the machine events, the derived temperature difference, one
``MachineStale`` per machine, duplicates, expiry) - the code the Bytewax step runs.  The
published ``Alert`` events are paired (raise, clear) by ``alert_id`` and scored by
:func:`~plantstream.domain.alert_scoring.score_alerts`, the one matching rule
(docs/anomaly.md, "Scoring").  The trivial baseline is the same branch with fixed
engineering limits only (``AnomalyConfig.trivial_baseline``), fed the same batches.

Per fault kind: recall, median time to detect (for failures: median lead time of the
first precursor alert), and the precision of the alert kinds that address that fault kind
(:data:`ALERT_KINDS_FOR`).  Overall: recall over every scored fault, precision over every
scored alert.
"""

from __future__ import annotations

import statistics
import time
import zlib
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.contract.events import Alert, AlertAction
from plantstream.domain.alert_scoring import (
    EVAL_START_MS,
    FAULT_KINDS,
    AlertRecord,
    Scorecard,
    evaluation_plant,
    score_alerts,
)
from plantstream.domain.alerts import limit_table
from plantstream.simulator.faulty_feed import FeedLog, faulty_feed
from plantstream.streaming.alert_branch import AnomalyConfig
from plantstream.streaming.alert_replay import AlertReplay, Decoder, chunked

NAME = "alerts_score"
DEFAULT_MACHINES, DEFAULT_HOURS, DEFAULT_SEED = 50, 3.0, 11
QUICK_MACHINES, QUICK_HOURS, QUICK_SEED = 12, 1.0, 7
PARTITIONS = (0, 1, 2, 3)
#: Simulator steps (1 s each) per fed chunk: ~50 machines x 11 signals x 18 ~ 10,000 events,
#: the stream's consumer batch.
STEPS_PER_CHUNK = 18

#: The alert kinds whose precision is reported beside each fault kind's recall (the kinds
#: that can detect it, ``DETECTS``).  A ``limit`` alert addresses both spikes and failures:
#: it is true when it matched either, and counts under both (the baseline raises only limit
#: alerts, so its spike and failure precision are the same figure).
ALERT_KINDS_FOR: dict[str, tuple[str, ...]] = {
    "stuck": ("stuck",),
    "spike": ("spike", "rate", "limit"),
    "dropout": ("dropout",),
    "offline": ("stale",),
    "failure": ("drift", "limit"),
}


def alert_records(alerts: Iterable[Alert]) -> list[AlertRecord]:
    """Published alerts as scored intervals: each raise with the clear of the same ``alert_id``."""
    alerts = list(alerts)
    clears = {a.alert_id: a.source_ts for a in alerts if a.action is AlertAction.CLEAR}
    return [
        AlertRecord(a.machine_id, a.signal or "", a.kind or "", a.raised_at or a.source_ts, clears.get(a.alert_id))
        for a in alerts
        if a.action is AlertAction.RAISE
    ]


def _partition(machine_id: str) -> int:
    """A stable partition per machine (Python's ``hash`` of a str changes per process)."""
    return zlib.crc32(machine_id.encode()) % len(PARTITIONS)


def figures(card: Scorecard) -> dict[str, Any]:
    """The interface's figures of one scorecard (rounded for JSON)."""
    per_kind: dict[str, dict[str, Any]] = {}
    detect_s: list[float] = []
    faults = detected = 0
    for kind in FAULT_KINDS:
        fs = card.faults[kind]
        faults += fs.faults
        detected += fs.detected
        kinds = [card.alerts[k] for k in ALERT_KINDS_FOR[kind] if k in card.alerts]
        true, false = sum(a.true for a in kinds), sum(a.false for a in kinds)
        row: dict[str, Any] = {
            "faults": fs.faults,
            "detected": fs.detected,
            "recall": _r(fs.recall),
            "alerts": sum(a.alerts for a in kinds),
            "true_alerts": true,
            "false_alerts": false,
            "precision": _r(true / (true + false)) if true + false else None,
            "alert_kinds": list(ALERT_KINDS_FOR[kind]),
        }
        if kind == "failure":
            row["median_lead_s"] = _r(fs.median_s)
            row["modes"] = {m: {"faults": s.faults, "recall": _r(s.recall)} for m, s in card.failure_modes.items()}
        else:
            row["median_detect_s"] = _r(fs.median_s)
            detect_s.extend(fs.detect_s)
        per_kind[kind] = row
    return {
        "precision": _r(card.precision),
        "recall": _r(detected / faults) if faults else None,
        "per_kind": per_kind,
        "median_detect_s": _r(statistics.median(detect_s)) if detect_s else None,
        "median_lead_s": per_kind["failure"]["median_lead_s"],
        "per_alert_kind": {k: {n: _r(v) for n, v in a.to_dict().items()} for k, a in card.alerts.items()},
        "not_scored": dict(card.not_scored),
    }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def score(settings: Any, *, machines: int, hours: float, seed: int) -> dict[str, Any]:
    """Simulate, run the anomaly branch (and its limits-only baseline), score both."""
    t0 = time.perf_counter()
    plant = evaluation_plant(machines, hours=hours, seed=seed)
    types = {m.machine_id: m.machine_type.value for m in plant.machines()}
    expiry_ms = settings.stream.idle_key_expiry_seconds * 1000
    config = AnomalyConfig(
        state_wait_ms=min(round(settings.alerts.machine_state_wait_seconds * 1000), expiry_ms // 2),
        expiry_ms=expiry_ms,
        limits=limit_table(settings.alerts.limits),
        machine_types=types,
    )
    baseline_config = AnomalyConfig(
        state_wait_ms=config.state_wait_ms,
        expiry_ms=config.expiry_ms,
        limits=config.limits,
        machine_types=types,
        trivial_baseline=True,
    )
    stream = AlertReplay(config, None, PARTITIONS)
    baseline = AlertReplay(baseline_config, None, PARTITIONS)
    log = FeedLog()
    steps = faulty_feed(plant, start_ms=EVAL_START_MS, steps=round(hours * 3600 / plant.sample_period_s), log=log)
    for batches in chunked(steps, STEPS_PER_CHUNK, Decoder(), partition_of=_partition):
        stream.feed(batches)
        baseline.feed(batches)
    stream.finish()
    baseline.finish()
    cards = {
        name: score_alerts(
            alert_records(replay.alerts),
            log.ground_truth,
            start_ms=log.start_ms,
            end_ms=log.end_ms,
            caught_upstream=log.caught_upstream,
        )
        for name, replay in (("stream", stream), ("baseline", baseline))
    }
    out = figures(cards["stream"])
    base = figures(cards["baseline"])
    out["baseline"] = {k: base[k] for k in ("precision", "recall", "per_kind", "median_detect_s", "median_lead_s")}
    out.update(
        machines=machines,
        hours=hours,
        seed=seed,
        events=dict(log.events),
        alert_events=len(stream.alerts),
        baseline_alert_events=len(baseline.alerts),
        wall_s=round(time.perf_counter() - t0, 1),
    )
    return out


def print_table(console: Console, f: dict[str, Any]) -> None:
    table = Table(title=f"alerts vs ground truth: {f['machines']} machines, {f['hours']} h, seed {f['seed']}")
    for column in ("fault kind", "faults", "recall", "precision", "median s", "baseline recall", "baseline precision"):
        table.add_column(column)
    for kind, row in f["per_kind"].items():
        b = f["baseline"]["per_kind"][kind]
        median = row.get("median_detect_s", row.get("median_lead_s"))
        table.add_row(
            kind + (" (lead)" if kind == "failure" else ""),
            str(row["faults"]),
            _fmt(row["recall"]),
            _fmt(row["precision"]),
            _fmt(median, ".0f"),
            _fmt(b["recall"]),
            _fmt(b["precision"]),
        )
    table.add_row(
        "all",
        "",
        _fmt(f["recall"]),
        _fmt(f["precision"]),
        _fmt(f["median_detect_s"], ".0f"),
        _fmt(f["baseline"]["recall"]),
        _fmt(f["baseline"]["precision"]),
    )
    console.print(table)


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def run(settings: Any, console: Console, quick: bool, **size: Any) -> dict[str, Any]:
    """Score at the default size (``quick``: a small one), table, ``benchmarks/results/alerts_score.json``.

    ``size`` (``machines``, ``hours``, ``seed``) overrides; a run not at the default size
    writes ``alerts_score-quick.json`` so it never replaces the quoted figures.
    """
    default = (QUICK_MACHINES, QUICK_HOURS, QUICK_SEED) if quick else (DEFAULT_MACHINES, DEFAULT_HOURS, DEFAULT_SEED)
    machines = size.get("machines") or default[0]
    hours = size.get("hours") or default[1]
    seed = size.get("seed") if size.get("seed") is not None else default[2]
    f = score(settings, machines=machines, hours=hours, seed=seed)
    print_table(console, f)
    full = (machines, hours, seed) == (DEFAULT_MACHINES, DEFAULT_HOURS, DEFAULT_SEED)
    path = write_results(NAME, f, quick=not full)
    console.print(f"figures: {path}")
    return f


__all__ = ["ALERT_KINDS_FOR", "alert_records", "figures", "run", "score"]
