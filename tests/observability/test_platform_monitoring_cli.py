"""``plantstream platform up --with-monitoring`` starts the exporter and Prometheus as
supervised services on a private platform; Prometheus scrapes them; ``down`` stops all."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from waiting import wait_for

from plantstream.observability.ports import PORT_SPAN, metrics_port
from plantstream.services.isolated import isolated_settings, pick_free_port_block
from plantstream.settings import child_env

pytestmark = pytest.mark.integration
CLI = [str(Path(sys.executable).parent / "plantstream")]


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=180, check=False)


def _up_jobs(port: int) -> dict[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as resp:
        targets = json.loads(resp.read())["data"]["activeTargets"]
    return {t["labels"]["job"]: t["health"] for t in targets}


@pytest.mark.slow  # ~32 s; test_monitoring_live scrapes a running platform with a real Prometheus in the default tier
def test_up_with_monitoring_scrapes_the_platform_and_down_stops_everything(tmp_path: Path) -> None:
    # Metrics left at their default (off): --with-monitoring turns them on for what it starts.
    settings = isolated_settings(
        tmp_path / "state", metrics={"base_port": pick_free_port_block(PORT_SPAN), "scrape_interval_seconds": 1.0}
    )
    env = child_env(settings)
    up = _cli(env, "platform", "up", "--with-monitoring")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "PLANTSTREAM_METRICS__ENABLED is not set" in up.stderr
        status = json.loads(_cli(env, "platform", "status", "--json").stdout)
        services = {s["name"]: s for s in status["services"]}
        assert services["exporter"]["healthy"] and services["prometheus"]["healthy"], services
        port = metrics_port(settings, "prometheus")
        jobs = wait_for(
            lambda: (j := _up_jobs(port)) and "unknown" not in j.values() and j,
            60,
            "Prometheus to have scraped every target once",
        )
        assert {k: jobs[k] for k in ("exporter", "hotstore", "prometheus")} == dict.fromkeys(
            ("exporter", "hotstore", "prometheus"), "up"
        )
        assert jobs["gateway"] == "down" and jobs["stream"] == "down"  # not running: honestly down
        assert (settings.state_dir / "prometheus" / "data").is_dir()
    finally:
        down = _cli(env, "platform", "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for name in ("prometheus", "exporter", "hotstore", "tansu", "seaweedfs"):
        assert f"{name}" in down.stderr and "stopped" in down.stderr
    assert not (settings.state_dir / "run" / "prometheus.pid").exists()
