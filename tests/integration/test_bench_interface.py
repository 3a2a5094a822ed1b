"""The benchmark interface the issues check, as written: ``plantstream bench NAME --json``
ends with one JSON line of the figures (here in ``--quick`` mode: the numbers are the
benchmarks' business, not the tests'; the benchmarks fail on their own if a run's
results are incomplete).  A quick run writes ``NAME-quick.json`` and leaves the full
run's figures alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plantstream.benchmarks.results_file import results_path

pytestmark = pytest.mark.integration


def bench_json(name: str) -> dict:
    full = results_path(name, quick=False)
    before = full.read_bytes() if full.exists() else None
    done = subprocess.run(
        [str(Path(sys.executable).parent / "plantstream"), "bench", name, "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr[-3000:]
    figures = json.loads(lines[-1])
    assert json.loads(results_path(name, quick=True).read_text()) == figures
    assert (full.read_bytes() if full.exists() else None) == before
    return figures


@pytest.mark.slow  # ~1.5 min each: the interface of a benchmark, not a behaviour
def test_bench_stream_json_has_the_figures_the_issue_names() -> None:
    f = bench_json("stream")
    assert f["events"] >= 100_000
    for key in (
        "plantstream_events_per_s",
        "quix_events_per_s",
        "bare_consumer_events_per_s",
        "plantstream_2workers_events_per_s",
    ):
        assert isinstance(f[key], int) and f[key] > 0, key
    assert f["ratio_plantstream_to_bare"] == round(f["plantstream_events_per_s"] / f["bare_consumer_events_per_s"], 3)


@pytest.mark.slow  # ~1.5 min each: the interface of a benchmark, not a behaviour
def test_bench_state_json_shows_every_restart_resumed_where_the_last_stopped() -> None:
    f = bench_json("state")
    assert f["flow_restarts"] == len(f["restarts_per_day"]) >= 2
    assert f["flow_events"] == sum(r["events"] for r in f["restarts_per_day"])
    assert all(r["start_to_first_fetch_s"] > 0 for r in f["restarts_per_day"])
    assert f["tracked_machines_max"] <= 40 and f["open_windows_max"] <= 4
