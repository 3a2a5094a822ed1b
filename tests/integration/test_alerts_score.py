"""``plantstream alerts score --json`` as the issue's checks call it (small size: ``--quick``).

The figures come from the run, not from the test: the test counts the injected faults in
the simulator's own ground-truth log for the same plant and seed and checks that the
interface scored exactly those, that injected stuck sensors were found by the stream's
branch and not by the limits-only baseline (fixed limits cannot see a stuck value), and that
the quoted full-size figures were left alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plantstream.benchmarks.alerts_score import QUICK_HOURS, QUICK_MACHINES, QUICK_SEED
from plantstream.benchmarks.results_file import results_path
from plantstream.domain.alert_scoring import EVAL_START_MS, MatchingRules, evaluation_plant
from plantstream.simulator.faulty_feed import FeedLog, faulty_feed

pytestmark = pytest.mark.integration

KINDS = ("stuck", "spike", "dropout", "offline", "failure")


def injected(kind: str) -> int:
    """Faults of ``kind`` the simulator logged that start inside the scored time."""
    plant = evaluation_plant(QUICK_MACHINES, hours=QUICK_HOURS, seed=QUICK_SEED)
    log = FeedLog()
    for _ in faulty_feed(plant, start_ms=EVAL_START_MS, steps=round(QUICK_HOURS * 3600), log=log):
        pass
    rules = MatchingRules()
    lo, hi = log.start_ms + rules.warmup_ms, log.end_ms - rules.tail_ms
    return sum(1 for e in log.ground_truth if e.kind == "sensor_fault" and e.mode == kind and lo <= e.ts < hi)


def test_alerts_score_json_scores_the_branch_against_the_ground_truth() -> None:
    full = results_path("alerts_score", quick=False)
    before = full.read_bytes() if full.exists() else None
    done = subprocess.run(
        [str(Path(sys.executable).parent / "plantstream"), "alerts", "score", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    f = json.loads(done.stdout.strip().splitlines()[-1])
    assert json.loads(results_path("alerts_score", quick=True).read_text()) == f
    assert (full.read_bytes() if full.exists() else None) == before, "a quick run replaced the full figures"

    for key in ("precision", "recall", "per_kind", "median_detect_s", "median_lead_s", "baseline"):
        assert key in f, key
    for figures in (f, f["baseline"]):
        assert set(figures["per_kind"]) == set(KINDS)
        for kind, row in figures["per_kind"].items():
            assert {"precision", "recall", "faults", "detected"} <= set(row), kind
            assert row["recall"] == pytest.approx(row["detected"] / row["faults"], abs=1e-3), kind
        total = sum(r["faults"] for r in figures["per_kind"].values())
        found = sum(r["detected"] for r in figures["per_kind"].values())
        assert figures["recall"] == pytest.approx(found / total, abs=1e-3)

    stuck = f["per_kind"]["stuck"]
    assert stuck["faults"] == injected("stuck") >= 1, "the scored stuck faults are the simulator's"
    assert stuck["detected"] >= 1 and stuck["median_detect_s"] is not None, "an injected stuck sensor is found"
    assert f["baseline"]["per_kind"]["stuck"]["detected"] == 0, "fixed limits cannot see a stuck sensor"
    assert f["per_kind"]["offline"]["detected"] > f["baseline"]["per_kind"]["offline"]["detected"]
    assert 0 < f["precision"] <= 1 and 0 < f["recall"] <= 1
    assert f["recall"] > f["baseline"]["recall"], "the branch finds more than fixed limits"
    assert f["per_kind"]["failure"]["median_lead_s"] is not None and f["per_kind"]["failure"]["median_lead_s"] > 0
    assert f["machines"] == QUICK_MACHINES and f["events"]["telemetry"] > 100_000
