"""Anomaly benchmark: what the detector costs per event, and how well it detects.

One command, two parts, no services:

* **cost** - a :class:`DetectorBank` of ~160 series (25 simulated machines, their signals and
  the derived temperature difference, faults on), warmed on 20 simulated minutes, then fed
  realistic stream batches of 10,000 events (~65 s of the plant, every series interleaved):
  ``update_batch`` per batch, best of 3 passes from the same restored snapshot, against
  the per-event ``SeriesDetector.update`` loop on the same events (which must give the same
  transitions).  Also the series-code look-up from Arrow string columns (``codes``), which
  the stream pays per batch too.  The budget is 0.5 µs per event (docs/anomaly.md).
* **detection** - a faulty plant of 50 machines (6 simulated hours, seed 11; ``--quick``:
  2 hours, seed 7, the unit test's run) scored against its ground truth
  (:mod:`plantstream.domain.alert_scoring`) for the detector and the limits-only baseline,
  at the default precursor horizon (10 min) and at 30 min.

Run: ``python -m plantstream.benchmarks.anomaly [--quick]`` (table + ``benchmarks/results/anomaly.json``).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import pickle
import statistics
import time
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from plantstream.benchmarks.results_file import write_results
from plantstream.domain.alert_scoring import (
    FAULT_KINDS,
    MatchingRules,
    Scorecard,
    SimulatedTelemetry,
    alerts_from_transitions,
    evaluation_plant,
    run_detectors,
    score_alerts,
    simulate_telemetry,
)
from plantstream.domain.anomaly import DetectorBank, SeriesDetector, Transition, default_config, limits_only

BATCH = 10_000
COST_MACHINES = 25
WARM_MIN, MEASURE_MIN_FULL, MEASURE_MIN_QUICK = 20, 30, 8
PER_EVENT_FULL, PER_EVENT_QUICK = 4_000, 1_000
PASSES = 3
EVAL_MACHINES = 50
EVAL_FULL = (6.0, 11)  # hours, seed
EVAL_QUICK = (2.0, 7)
BUDGET_US = 0.5
QUALITY_NAMES = ("good", "uncertain", "bad", "stale")


def run(settings: Any, console: Console, quick: bool) -> dict[str, Any]:
    """Run the benchmark (``settings`` unused: no services); returns and writes the figures."""
    del settings
    with console.status("cost: simulating the cost plant"):
        cost = _cost(quick)
    hours, seed = EVAL_QUICK if quick else EVAL_FULL
    with console.status(f"detection: {EVAL_MACHINES} machines, {hours:g} simulated hours"):
        detection = _detection(hours, seed)
    figures = {"cost": cost, "detection": detection, "cpus": os.cpu_count()}
    _print_tables(console, figures)
    write_results("anomaly", figures, quick=quick)
    return figures


# -- cost --------------------------------------------------------------------------------------


def _slice(tel: SimulatedTelemetry, i: int, j: int) -> tuple[np.ndarray, ...]:
    return tel.code[i:j], tel.ts[i:j], tel.value[i:j], tel.quality[i:j], tel.running[i:j]


def _cost(quick: bool) -> dict[str, Any]:
    measure_min = MEASURE_MIN_QUICK if quick else MEASURE_MIN_FULL
    hours = (WARM_MIN + measure_min) / 60
    tel = simulate_telemetry(evaluation_plant(COST_MACHINES, hours=hours, seed=3), hours=hours)
    warm_end = int(np.searchsorted(tel.ts, tel.start_ms + WARM_MIN * 60_000))
    warm_bank = DetectorBank()
    for m, s, t in tel.series:
        warm_bank.add(m, s, default_config(t, s))
    for i in range(0, warm_end, BATCH):
        warm_bank.update_batch(*_slice(tel, i, min(i + BATCH, warm_end)))
    warm_state = warm_bank.snapshot()
    bounds = list(range(warm_end, len(tel), BATCH))
    batches = [(i, min(i + BATCH, len(tel))) for i in bounds if min(i + BATCH, len(tel)) - i == BATCH]
    events = sum(j - i for i, j in batches)

    pass_us: list[float] = []
    pass_cpu_us: list[float] = []
    batch_ms: list[float] = []
    transitions: list[Transition] = []
    gc_was = gc.isenabled()
    for p in range(PASSES):
        bank = DetectorBank.from_snapshot(warm_state)
        out: list[Transition] = []
        gc.disable()  # as the stream's decoder runs: no cyclic GC pauses inside the timed batches
        try:
            elapsed = cpu = 0.0
            for i, j in batches:
                args = _slice(tel, i, j)
                t0, c0 = time.perf_counter(), time.thread_time()
                out += bank.update_batch(*args).transitions
                dt = time.perf_counter() - t0
                cpu += time.thread_time() - c0
                elapsed += dt
                if p == 0:
                    batch_ms.append(dt * 1e3)
        finally:
            if gc_was:
                gc.enable()
        pass_us.append(elapsed / events * 1e6)
        pass_cpu_us.append(cpu / events * 1e6)
        transitions = out

    # series codes from Arrow string columns, as a decoded batch carries them
    names = np.array([f"{m}\x1f{s}" for m, s, _ in tel.series], dtype=object)
    i, j = batches[0]
    pairs = names[tel.code[i:j]]
    machine_col = pa.array([p.split("\x1f")[0] for p in pairs])
    signal_col = pa.array([p.split("\x1f")[1] for p in pairs])
    bank = DetectorBank.from_snapshot(warm_state)
    t0 = time.perf_counter()
    for _ in range(20):
        codes = bank.codes(machine_col, signal_col)
    codes_us = (time.perf_counter() - t0) / 20 / BATCH * 1e6
    if not np.array_equal(codes, tel.code[i:j]):
        raise RuntimeError("codes() disagrees with the series the batch was built from")

    # the per-event loop: one SeriesDetector per series, restored from the same warm state
    per_event_n = min(PER_EVENT_QUICK if quick else PER_EVENT_FULL, events)
    detectors = [SeriesDetector.from_snapshot({**warm_state, "series": [entry]}) for entry in warm_state["series"]]
    lo = batches[0][0]
    code, ts, value, quality, running = _slice(tel, lo, lo + per_event_n)
    single: list[Transition] = []
    t0, c0 = time.perf_counter(), time.thread_time()
    for c, t, v, q, r in zip(
        code.tolist(), ts.tolist(), value.tolist(), quality.tolist(), running.tolist(), strict=True
    ):
        d = detectors[c].update(t, None if math.isnan(v) else v, QUALITY_NAMES[q], None if r < 0 else bool(r))
        single += d.transitions
    per_event_us = (time.perf_counter() - t0) / per_event_n * 1e6
    per_event_cpu_us = (time.thread_time() - c0) / per_event_n * 1e6
    check = DetectorBank.from_snapshot(warm_state).update_batch(*_slice(tel, lo, lo + per_event_n)).transitions
    key = lambda t: (t.machine_id, t.signal, t.ts_ms, t.kind, t.action)  # noqa: E731
    if sorted(single, key=key) != sorted(check, key=key):
        raise RuntimeError("per-event update and update_batch disagree")

    t0 = time.perf_counter()
    state = warm_bank.snapshot()
    snapshot_ms = (time.perf_counter() - t0) * 1e3
    blob = pickle.dumps(state)
    t0 = time.perf_counter()
    DetectorBank.from_snapshot(pickle.loads(blob))
    restore_ms = (time.perf_counter() - t0) * 1e3

    best, best_cpu = min(pass_us), min(pass_cpu_us)
    return {
        "series": len(tel.series),
        "batch_events": BATCH,
        "batches": len(batches),
        "events": events,
        "update_batch_us_per_event": round(best, 3),
        "update_batch_us_per_event_passes": [round(v, 3) for v in pass_us],
        "update_batch_cpu_us_per_event": round(best_cpu, 3),
        "update_batch_cpu_us_per_event_passes": [round(v, 3) for v in pass_cpu_us],
        "batch_ms_median": round(statistics.median(batch_ms), 3),
        "batch_ms_max": round(max(batch_ms), 3),
        "codes_us_per_event": round(codes_us, 3),
        "per_event_update_us": round(per_event_us, 1),
        "per_event_update_cpu_us": round(per_event_cpu_us, 1),
        "per_event_events": per_event_n,
        "ratio_per_event_to_batch": round(per_event_cpu_us / best_cpu, 1),
        "budget_us_per_event": BUDGET_US,
        "within_budget": best_cpu + codes_us <= BUDGET_US,
        "transitions": len(transitions),
        "snapshot_bytes_per_series": round(len(blob) / len(tel.series)),
        "snapshot_ms": round(snapshot_ms, 2),
        "restore_ms": round(restore_ms, 2),
    }


# -- detection -----------------------------------------------------------------------------------


def _detection(hours: float, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    tel = simulate_telemetry(evaluation_plant(EVAL_MACHINES, hours=hours, seed=seed), hours=hours)
    sim_s = time.perf_counter() - t0
    detectors = {
        "detector": default_config,
        "baseline": lambda machine_type, signal: limits_only(default_config(machine_type, signal)),
    }
    out: dict[str, Any] = {
        "machines": EVAL_MACHINES,
        "hours": hours,
        "seed": seed,
        "events": len(tel),
        "series": len(tel.series),
        "simulate_s": round(sim_s, 1),
    }
    for name, config_for in detectors.items():
        t0 = time.perf_counter()
        alerts = alerts_from_transitions(run_detectors(tel, config_for))
        detect_s = time.perf_counter() - t0
        for horizon_min in (10, 30):
            rules = MatchingRules(horizon_ms=horizon_min * 60_000)
            card = score_alerts(
                alerts,
                tel.ground_truth,
                start_ms=tel.start_ms,
                end_ms=tel.end_ms,
                rules=rules,
                caught_upstream=tel.caught_upstream,
            )
            key = name if horizon_min == 10 else f"{name}_h30"
            out[key] = _rounded(card.to_dict()) if horizon_min == 10 else _precursors(card)
        out[f"{name}_detect_s"] = round(detect_s, 2)
    return out


def _precursors(card: Scorecard) -> dict[str, Any]:
    return _rounded(
        {
            "failure": card.faults["failure"].to_dict(),
            "failure_modes": {k: v.to_dict() for k, v in card.failure_modes.items()},
            "alerts": {k: card.alerts[k].to_dict() for k in ("drift", "limit") if k in card.alerts},
        }
    )


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


# -- output ---------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _print_tables(console: Console, f: dict[str, Any]) -> None:
    c = f["cost"]
    table = Table(title=f"detector cost: {c['series']} series, batches of {c['batch_events']:,} events")
    for column in ("path", "CPU µs / event", "wall µs / event", "÷ batch (CPU)"):
        table.add_column(column, justify="right")
    table.add_row(
        "update_batch (best of 3)",
        f"{c['update_batch_cpu_us_per_event']:.3f}",
        f"{c['update_batch_us_per_event']:.3f}",
        "1.0",
    )
    table.add_row("codes() from Arrow columns", "", f"{c['codes_us_per_event']:.3f}", "")
    table.add_row(
        "per-event update()",
        f"{c['per_event_update_cpu_us']:.1f}",
        f"{c['per_event_update_us']:.1f}",
        f"{c['ratio_per_event_to_batch']:.0f}",
    )
    console.print(table)
    console.print(
        f"state: {c['snapshot_bytes_per_series']:,} bytes per series pickled; snapshot of the bank "
        f"{c['snapshot_ms']:.1f} ms, restore {c['restore_ms']:.1f} ms"
    )
    console.print(
        f"batch median {c['batch_ms_median']:.2f} ms, max {c['batch_ms_max']:.2f} ms; "
        f"budget {c['budget_us_per_event']} µs/event (CPU of update_batch + codes): "
        f"{'met' if c['within_budget'] else 'NOT met'}"
    )
    d = f["detection"]
    det, base = d["detector"], d["baseline"]
    table = Table(
        title=f"detection: {d['machines']} machines, {d['hours']:g} h, seed {d['seed']}, {d['events']:,} events"
    )
    for column in ("fault kind", "faults", "recall", "baseline recall", "median detect s / lead s"):
        table.add_column(column, justify="right")
    for kind in FAULT_KINDS:
        fd, fb = det["faults"][kind], base["faults"][kind]
        table.add_row(kind, str(fd["faults"]), _fmt(fd["recall"]), _fmt(fb["recall"]), _fmt(fd["median_s"], ".0f"))
    for mode, fm in det["failure_modes"].items():
        table.add_row(f"  failure {mode}", str(fm["faults"]), _fmt(fm["recall"]), "", _fmt(fm["median_s"], ".0f"))
    console.print(table)
    table = Table(title="alerts (detector; the baseline raises only limit alerts)")
    for column in ("alert kind", "alerts", "true", "false", "excluded", "precision", "chance"):
        table.add_column(column, justify="right")
    for kind, a in det["alerts"].items():
        table.add_row(
            kind,
            str(a["alerts"]),
            str(a["true"]),
            str(a["false"]),
            str(a["excluded"]),
            _fmt(a["precision"]),
            _fmt(a.get("chance_precision")),
        )
    console.print(table)
    h30 = d["detector_h30"]
    console.print(
        f"overall precision {_fmt(det['precision'])} (baseline {_fmt(base['precision'])}); "
        f"precursor horizon 30 min: failure recall {_fmt(h30['failure']['recall'])}, "
        f"drift precision {_fmt(h30['alerts']['drift']['precision'])} "
        f"(chance {_fmt(h30['alerts']['drift'].get('chance_precision'))})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (writes anomaly-quick.json)")
    args = parser.parse_args()
    run(None, Console(), args.quick)


if __name__ == "__main__":
    main()
