"""Where a benchmark's figures go: ``benchmarks/results/NAME.json`` for a full run (kept in
git, quoted by the docs), ``NAME-quick.json`` for a ``--quick`` smoke run (ignored by git),
so a smoke run - the tests make some - never replaces the figures of a full one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def results_path(name: str, *, quick: bool) -> Path:
    return RESULTS_DIR / (f"{name}-quick.json" if quick else f"{name}.json")


def write_results(name: str, figures: dict[str, Any], *, quick: bool) -> Path:
    path = results_path(name, quick=quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return path
