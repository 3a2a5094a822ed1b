"""The failure model against the engineer's rule on weeks of the simulated plant: the issue's figures.

Runs :func:`plantstream.models.evaluation.run_simulation_evaluation` (the AI4I-calibrated
physics of :mod:`plantstream.simulator`, the shared feature definition, the time split with
purge, the calibrated gradient-boosting model and the rule on the same test period) and
writes the report to ``benchmarks/results/predictive_maintenance.json``
(``-quick`` for a smaller run).  In memory: the lake path (``plantstream train``) computes
the same features from silver, which is what ``tests/models`` checks at a smaller size; at
three weeks of 50 machines the in-memory path takes minutes where the lake path takes an hour
on a shared 2-core machine.

    python -m plantstream.benchmarks.predictive_maintenance [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from plantstream.benchmarks.results_file import write_results

NAME = "predictive_maintenance"
FULL = {"weeks": 3.0, "machines": 50, "seed": 2020}
QUICK = {"weeks": 0.5, "machines": 12, "seed": 2020}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _json_safe(value.item())
    return value


def run(*, quick: bool = False) -> dict[str, Any]:
    """Simulate, train, compare; the report with the headline figures first."""
    from plantstream.models.evaluation import evaluate_on_simulation

    report = evaluate_on_simulation(**(QUICK if quick else FULL))
    model, rule = report["model"], report["baseline_fixed"]
    headline = {
        "pr_auc": model["pr_auc"],
        "f1": model["f1"],
        "baseline_f1": rule["f1"],
        "baseline_tuned_f1": report["baseline_tuned"]["f1"],
        "median_lead_time_min": model["lead_time_median_min"],
        "f1_ratio_vs_rule": report["goals"]["f1_ratio_vs_fixed_rule"],
        "goals_met": report["goals"]["f1_goal_met"] and report["goals"]["lead_time_goal_met"],
        "training_s": report["timings_s"]["train"],
        "total_s": report["timings_s"]["total"],
    }
    return _json_safe({"headline": headline, **report})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half a week of 12 machines")
    args = parser.parse_args(argv)
    figures = run(quick=args.quick)
    path = write_results(NAME, figures, quick=args.quick)
    print(json.dumps(figures["headline"]), file=sys.stdout)
    print(f"written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
