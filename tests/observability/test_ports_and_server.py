"""The port registry and the one /metrics + /healthz server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from plantstream.observability.ports import COMPONENTS, PORT_SPAN, metrics_port, scrape_targets
from plantstream.observability.server import MetricsServer, serve_component
from plantstream.services.isolated import pick_free_port_block
from plantstream.settings import Settings, load_settings


def _settings(tmp_path: Path, **metrics: object) -> Settings:
    return load_settings(state_dir=tmp_path, metrics={"enabled": True, **metrics})


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def test_every_component_instance_gets_its_own_port_inside_the_block(tmp_path: Path) -> None:
    settings = _settings(tmp_path, base_port=20_000)
    ports = [metrics_port(settings, name, k) for name, c in COMPONENTS.items() for k in range(c.slots)]
    assert len(ports) == len(set(ports)), "two instances share a port"
    assert min(ports) == 20_000 and max(ports) == 20_000 + PORT_SPAN - 1
    assert metrics_port(settings, "stream", 3) == metrics_port(settings, "stream") + 3


def test_the_settings_keep_the_whole_block_below_65536() -> None:
    top = Settings.model_fields["metrics"].annotation.model_fields["base_port"].metadata
    limit = next(m.le for m in top if hasattr(m, "le"))
    assert limit + PORT_SPAN <= 65_536


def test_unknown_components_and_out_of_range_instances_are_refused(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(ValueError, match="unknown metrics component"):
        metrics_port(settings, "grafana")
    with pytest.raises(ValueError, match="stream index"):
        metrics_port(settings, "stream", COMPONENTS["stream"].slots)


def test_scrape_targets_are_the_ports_the_components_bind(tmp_path: Path) -> None:
    settings = _settings(tmp_path, base_port=30_000).model_copy(
        update={"stream": Settings(state_dir=tmp_path).stream.model_copy(update={"workers": 3})}
    )
    targets = scrape_targets(settings)
    assert targets["stream"] == [f"127.0.0.1:{metrics_port(settings, 'stream', k)}" for k in range(3)]
    assert targets["gateway"] == [f"127.0.0.1:{metrics_port(settings, 'gateway')}"]
    assert set(targets) == set(COMPONENTS)


def test_server_serves_metrics_health_and_nothing_else() -> None:
    registry = CollectorRegistry()
    Counter("plantstream_test_things", "things", registry=registry).inc(3)
    healthy = {"ok": True, "detail": "fine"}
    server = MetricsServer(registry, port=0, health=lambda: healthy)
    try:
        status, ctype, body = _get(f"{server.url}/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert b"plantstream_test_things_total 3.0" in body
        status, ctype, body = _get(f"{server.url}/healthz")
        assert (status, ctype, json.loads(body)) == (200, "application/json", healthy)
        healthy["ok"] = False
        assert _get(f"{server.url}/healthz")[0] == 503
        assert _get(f"{server.url}/other")[0] == 404
    finally:
        server.close()


def test_a_failing_health_check_is_an_unhealthy_answer() -> None:
    def broken() -> dict:
        raise RuntimeError("disk gone")

    server = MetricsServer(CollectorRegistry(), port=0, health=broken)
    try:
        status, _ctype, body = _get(f"{server.url}/healthz")
        assert status == 503 and "disk gone" in json.loads(body)["error"]
    finally:
        server.close()


def test_serve_component_reuses_its_server_and_refuses_another_registry(tmp_path: Path) -> None:
    settings = _settings(tmp_path, base_port=pick_free_port_block(PORT_SPAN))
    registry = CollectorRegistry()
    server = serve_component(settings, "stream", registry, index=2)
    try:
        assert server.port == metrics_port(settings, "stream", 2)
        assert serve_component(settings, "stream", registry, index=2) is server
        with pytest.raises(RuntimeError, match="another registry"):
            serve_component(settings, "stream", CollectorRegistry(), index=2)
    finally:
        server.close()
    # closed: the port is free again for a new server
    again = serve_component(settings, "stream", CollectorRegistry(), index=2)
    again.close()
