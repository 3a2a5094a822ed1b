"""The platform's Dagster service: a persistent instance under the state dir, and what healthy means."""

from __future__ import annotations

import os
import subprocess
import sys

from plantstream.services.dagster_service import (
    HEALTH_QUERY,
    MAX_CONCURRENT_RUNS,
    health_problems,
    spec,
    write_instance_files,
)
from plantstream.services.supervisor import KNOWN_SERVICES, LocalPlatform
from plantstream.settings import load_settings

INSPECT_INSTANCE = """
import dagster as dg
instance = dg.DagsterInstance.get()
config = instance.get_concurrency_config()
print(type(instance.run_storage).__name__, type(instance.run_coordinator).__name__,
      config.run_queue_config.max_concurrent_runs, config.pool_config.default_pool_limit)
"""


def test_dagster_home_holds_a_persistent_sqlite_instance(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")
    workspace = write_instance_files(settings)
    home = settings.state_dir / "dagster"
    assert workspace == home / "workspace.yaml"
    assert "plantstream.orchestration.definitions" in workspace.read_text()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-c", INSPECT_INSTANCE], env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert out == ["SqliteRunStorage", "QueuedRunCoordinator", str(MAX_CONCURRENT_RUNS), "1"]
    assert (home / "storage").is_dir()  # runs and event logs live under the state dir, not in a temp dir


def test_the_service_runs_dagster_dev_on_the_settings_port_with_its_home(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path / "state", local_ports={"dagster_webserver": 3999})
    service = spec(settings)
    assert service.argv[1:4] == ["-m", "dagster", "dev"]
    assert service.argv[service.argv.index("-p") + 1] == "3999" and service.port == 3999
    assert service.argv[service.argv.index("-h") + 1] == "127.0.0.1"
    assert service.env["DAGSTER_HOME"] == str(settings.state_dir / "dagster")
    assert service.env["PLANTSTREAM_STATE_DIR"] == str(settings.state_dir)  # the code location's settings
    assert not (settings.state_dir / "dagster").exists()  # building a spec creates nothing (status reads only)


def test_healthy_needs_a_loaded_code_location_and_healthy_daemons() -> None:
    assert "daemonHealth" in HEALTH_QUERY
    location = {
        "name": "plantstream",
        "loadStatus": "LOADED",
        "locationOrLoadError": {"__typename": "RepositoryLocation"},
    }
    daemons = [{"daemonType": "SENSOR", "required": True, "healthy": True}]

    def answer(entries, statuses):
        return {
            "data": {
                "workspaceOrError": {"locationEntries": entries},
                "instance": {"daemonHealth": {"allDaemonStatuses": statuses}},
            }
        }

    assert health_problems(answer([location], daemons)) == []
    broken = {**location, "locationOrLoadError": {"__typename": "PythonError", "message": "ImportError: gold"}}
    assert health_problems(answer([broken], daemons)) == ["code location plantstream failed to load: ImportError: gold"]
    assert health_problems(answer([{**location, "loadStatus": "LOADING"}], daemons)) == [
        "code location plantstream is LOADING"
    ]
    sick = [{"daemonType": "SCHEDULER", "required": True, "healthy": False}, *daemons]
    assert health_problems(answer([location], sick)) == ["daemon SCHEDULER not healthy"]
    assert health_problems(answer([location], [])) == ["no daemon status yet"]


def test_platform_up_with_dagster_starts_it_after_the_services_its_assets_use(tmp_path) -> None:
    settings = load_settings(state_dir=tmp_path / "state")
    assert "dagster" not in LocalPlatform(settings).services  # opt-in: platform up --with-dagster
    services = LocalPlatform(settings, with_dagster=True, with_monitoring=True).services
    assert services == ("seaweedfs", "tansu", "hotstore", "mlflow", "dagster", "exporter", "prometheus")
    assert "dagster" in KNOWN_SERVICES
