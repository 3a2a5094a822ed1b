"""``plantstream bench lakehouse --quick --json`` ends with the JSON line the issue names.

The figures are the benchmark's business; this checks the interface: one JSON line with
``machines``, ``readings``, ``bronze_to_gold_s``, ``peak_rss_mb`` and ``query_ms`` (one
figure per analyst query), consistent with what the run wrote to bronze, and the quick
results file beside the full run's (which it leaves alone).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plantstream.benchmarks.results_file import results_path

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_lakehouse_json_has_the_figures_the_issue_names() -> None:
    full = results_path("lakehouse", quick=False)
    before = full.read_bytes() if full.exists() else None
    done = subprocess.run(
        [str(Path(sys.executable).parent / "plantstream"), "bench", "lakehouse", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["failed_steps"] == []
    assert figures["machines"] == 20 and figures["signals_per_machine"] == 10
    # 20 machines x 10 signals, one reading every 10 s for 6 hours
    assert figures["readings"] == figures["bronze_rows"]["telemetry"] == 20 * 10 * 6 * 360
    assert 0 < figures["silver_s"] < figures["bronze_to_gold_s"] and figures["peak_rss_mb"] > 0
    assert set(figures["query_ms"]) == {"machine_day", "line_oee_month", "trend_90d"}
    assert all(ms > 0 for ms in figures["query_ms"].values())
    assert figures["query_rows"]["machine_day"] == 10 * 6 * 360  # one machine's readings of the run
    assert figures["query_rows"]["trend_90d"] == 90 * 5  # 90 days x 5 lines
    assert json.loads(results_path("lakehouse", quick=True).read_text()) == figures
    assert (full.read_bytes() if full.exists() else None) == before
