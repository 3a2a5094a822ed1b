"""``plantstream bench latency --json`` (issue 19's interface): its last line holds the load
rate and the alert and twin latencies, measured (``--quick``: the figures are the
benchmark's business; here only that they are there, consistent and come from samples)."""

from __future__ import annotations

import pytest
from test_bench_interface import bench_json

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a benchmark run: minutes on a busy machine


def test_bench_latency_json_has_the_load_rate_and_the_alert_and_twin_latencies() -> None:
    f = bench_json("latency")
    assert isinstance(f["load_events_per_s"], int) and f["load_events_per_s"] > 0
    assert f["load_events_per_s"] * f["measure_s"] <= f["events_produced"], "the window's load is part of all produced"
    for kind, samples in (("alert", "alerts_measured"), ("twin", "twin_samples")):
        p50, p99 = f[f"{kind}_p50_ms"], f[f"{kind}_p99_ms"]
        assert f[samples] > 0, f"no {kind} latency was measured"
        assert isinstance(p50, float) and isinstance(p99, float) and 0 < p50 <= p99 <= f[f"{kind}_max_ms"], kind
        assert f[f"{kind}_goal_met"] == (p99 < f[f"{kind}_p99_goal_ms"]), kind
    assert isinstance(f["flow_kept_up"], bool) and f["failed_steps"] == []
