"""The Dagster-side exporter reads real materialisations from a real Dagster instance."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg

from plantstream.observability.dagster_exporter import DagsterAssetCollector, dagster_registry

METRIC = "plantstream_dagster_asset_last_materialization_timestamp_seconds"


@dg.asset(key_prefix=["silver"])
def readings() -> int:
    return 1


@dg.asset(key_prefix=["gold"])
def summary() -> int:
    return 2


def test_last_materialisation_per_asset_from_the_event_log(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        registry = dagster_registry(instance, min_interval_s=0)
        assert registry.get_sample_value(METRIC, {"asset": "silver/readings"}) is None  # never materialised

        before = time.time()
        assert dg.materialize([readings], instance=instance).success
        after = time.time()
        first = registry.get_sample_value(METRIC, {"asset": "silver/readings"})
        assert first is not None and before <= first <= after
        assert registry.get_sample_value(METRIC, {"asset": "gold/summary"}) is None

        assert dg.materialize([readings, summary], instance=instance).success
        second = registry.get_sample_value(METRIC, {"asset": "silver/readings"})
        assert second is not None and second > first
        assert registry.get_sample_value(METRIC, {"asset": "gold/summary"}) is not None


def test_reads_are_cached_for_the_scrape_interval(tmp_path: Path) -> None:
    class CountingInstance:
        reads = 0

        def all_asset_keys(self) -> list:
            CountingInstance.reads += 1
            return []

        def get_latest_materialization_events(self, keys: list) -> dict:
            return {}

    now = [100.0]
    collector = DagsterAssetCollector(CountingInstance(), min_interval_s=5.0, clock=lambda: now[0])
    collector.last_materializations()
    now[0] += 4.9
    collector.last_materializations()
    assert CountingInstance.reads == 1
    now[0] += 0.2
    collector.last_materializations()
    assert CountingInstance.reads == 2
