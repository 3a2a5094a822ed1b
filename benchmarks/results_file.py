"""Where a benchmark's figures go: ``benchmarks/results/NAME.json`` for a full run (kept in
git, quoted by the docs), ``NAME-quick.json`` for a ``--quick`` smoke run (ignored by git),
so a smoke run - the tests make some - never replaces the figures of a full one.

Every file also says what machine it was measured on (``machine``: CPU model, cores and
the time of a fixed pure-Python loop), so figures from two machines are not mistaken for
a change of the code: the same code measured 2x slower on a machine whose reference loop
takes 2x longer is the machine, not a regression."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def results_path(name: str, *, quick: bool) -> Path:
    return RESULTS_DIR / (f"{name}-quick.json" if quick else f"{name}.json")


def write_results(name: str, figures: dict[str, Any], *, quick: bool) -> Path:
    """Write ``figures`` with the ``machine`` they were measured on (added to ``figures``
    too, so the command's JSON line and the file say the same)."""
    figures["machine"] = machine_reference()
    path = results_path(name, quick=quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return path


def machine_reference() -> dict[str, Any]:
    """The machine the figures come from: CPU model, cores, and the best of five timings of
    ``sum(range(1_000_000))`` in ms (the interpreter's speed on this machine right now)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        sum(range(1_000_000))
        best = min(best, time.perf_counter() - started)
    return {"cpu_model": _cpu_model(), "cpu_cores": os.cpu_count(), "python_loop_ms": round(best * 1000, 1)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
