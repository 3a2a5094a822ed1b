"""Every component's metrics follow the scheme in docs/observability.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from plantstream.edge.metrics import GatewayMetrics
from plantstream.observability.dagster_exporter import dagster_registry
from plantstream.observability.exporter import PlatformExporter, _Results
from plantstream.observability.scheme import registry_shapes, scheme_problems
from plantstream.services.hotstore.metrics import HotstoreMetrics
from plantstream.settings import load_settings


class _FakeInstance:
    """Just enough of a DagsterInstance for the collector's shape (no assets)."""

    def all_asset_keys(self) -> list:
        return []

    def get_latest_materialization_events(self, keys: list) -> dict:
        return {}


def _exporter_registry(tmp_path: Path) -> CollectorRegistry:
    exporter = PlatformExporter(load_settings(state_dir=tmp_path))
    exporter.results = _Results(
        log_end={("t", 0): 10},
        committed={("telemetry", "t", 0): 4},
        lag={("telemetry", "t", 0): 6},
        resume_epoch={("telemetry", "t"): 3},
        service_up={"tansu": 1},
        state_bytes={"seaweedfs": 100},
        fs_size=1000,
        fs_avail=500,
        finished_at=1.0,
    )
    return exporter.registry


@pytest.mark.parametrize("component", ["gateway", "stream", "hotstore", "exporter", "dagster"])
def test_component_metrics_follow_the_scheme(component: str, tmp_path: Path) -> None:
    import plantstream.streaming.metrics  # noqa: F401  (registers the stream's metrics in the default registry)

    registry = {
        "gateway": lambda: GatewayMetrics().registry,
        "stream": lambda: REGISTRY,
        "hotstore": lambda: HotstoreMetrics().registry,
        "exporter": lambda: _exporter_registry(tmp_path),
        "dagster": lambda: dagster_registry(_FakeInstance()),
    }[component]()
    shapes = registry_shapes(registry)
    assert shapes, "no metrics found"
    assert scheme_problems(shapes) == []


def test_the_scheme_catches_what_it_forbids() -> None:
    r = CollectorRegistry()
    Counter("plantstream_edge_readings", "ok", ["machine", "signal"], registry=r)
    Gauge("plantstream_stream_write_latency_ms", "bad unit", registry=r)
    Histogram("plantstream_stream_sink_duration", "no unit", registry=r)
    Gauge("plantstream_edge_sent_total", "a gauge named like a counter", registry=r)
    Gauge("stream_lag", "no prefix", registry=r)
    Gauge("plantstream_sales_revenue", "unknown subsystem", registry=r)
    problems = "\n".join(scheme_problems(registry_shapes(r)))
    for expected in [
        "plantstream_edge_readings (counter): label 'signal' is not in the scheme",
        "plantstream_edge_readings (counter): a machine label only on",
        "plantstream_stream_write_latency_ms (gauge): base units only",
        "plantstream_stream_write_latency_ms (gauge): a latency is measured in seconds",
        "plantstream_stream_sink_duration (histogram): a duration is measured in seconds",
        "plantstream_edge_sent_total (gauge): only counters end with _total",
        "stream_lag (gauge): names start with plantstream_",
        "plantstream_sales_revenue (gauge): the subsystem",
    ]:
        assert expected in problems, f"not caught: {expected}\n{problems}"
