"""The data-quality checks and their results, as the Dagster UI serves them (GraphQL of a running webserver).

A small lake (3 machines, one day, torque x1000 on one machine from 08:00) is checked by
the production job ``silver_quality`` on a persistent instance; then the real
``dagster-webserver`` is started on the repository's workspace.yaml and that instance, and
its GraphQL API (what the UI's asset pages query) must list the checks with their
blocking flag and the failed evaluation with the metadata an engineer needs: the failed
expectation, the observed value, failing rows and the Data Docs link.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from corruptions import unit_change
from lakehouse_data import MONDAY, SILVER, build_lake
from waiting import wait_for

from plantstream.settings import Settings, child_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]
ROOT = Path(__file__).parents[2]
KEY = ["silver", "telemetry_by_day"]
CHECKS = """query($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { ... on AssetNode {
    assetChecksOrError { ... on AssetChecks { checks { name blocking description } } } } } }"""
EXECUTIONS = """query($path: [String!]!, $check: String!, $partition: String) {
  assetCheckExecutions(assetKey: {path: $path}, checkName: $check, partition: $partition, limit: 5) {
    runId status partition evaluation { success severity description
      metadataEntries { label ... on TextMetadataEntry { text } ... on JsonMetadataEntry { jsonString }
                        ... on UrlMetadataEntry { url } } } } }"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


@pytest.fixture
def checked_instance(platform_settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    base = platform_settings.model_copy(
        update={
            "lake": platform_settings.lake.model_copy(update={"prefix": f"test/quality-ui-{tmp_path.name}"}),
            "state_dir": tmp_path / "state",
        }
    )
    with dg.DagsterInstance.from_config(str(home)) as instance:
        lake = build_lake(
            base, tmp_path, machines=3, days=1, sample_period_s=60.0, gold=False, silver=False, instance=instance
        )
        unit_change(lake.settings, "cnc-mill-001", "torque", MONDAY, 8, 1000)
        lake.materialize(SILVER)
        result = lake.defs.resolve_job_def("silver_quality").execute_in_process(
            instance=instance, tags={"dagster/partition": MONDAY.isoformat()}, raise_on_error=False
        )
        failed = {e.check_name for e in result.get_asset_check_evaluations() if not e.passed}
        assert "signal_ranges" in failed, failed
        yield lake.settings, home


def test_the_ui_lists_the_checks_and_shows_why_a_day_failed(checked_instance, free_port) -> None:
    settings, home = checked_instance
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=ROOT,
        env=child_env(settings, DAGSTER_HOME=str(home)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        node = wait_for(lambda: _checks(port, process), 180, "the webserver's checks of silver telemetry days")
        executions = graphql(
            port, EXECUTIONS, {"path": KEY, "check": "signal_ranges", "partition": MONDAY.isoformat()}
        )["assetCheckExecutions"]
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the webserver runs the code location in child processes
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    checks = {c["name"]: c for c in node}
    assert {"schema", "not_null", "signal_ranges", "unique_key", "time_order", "stuck_sensor", "shift_coverage"} <= set(
        checks
    )
    assert checks["signal_ranges"]["blocking"] and not checks["known_machines"]["blocking"]  # known_machines warns
    assert "unit change" in checks["signal_ranges"]["description"]
    (latest, *_) = executions
    assert latest["status"] == "FAILED" and latest["partition"] == MONDAY.isoformat()
    evaluation = latest["evaluation"]
    assert not evaluation["success"] and evaluation["severity"] == "ERROR"
    entries = {e["label"]: e for e in evaluation["metadataEntries"]}
    assert "torque" in entries["failed_expectation"]["text"]
    assert "unexpected" in entries["observed_value"]["text"]
    rows = json.loads(entries["failing_rows"]["jsonString"])
    assert rows and {r["machine_id"] for r in rows} == {"cnc-mill-001"}
    assert entries["data_docs"]["url"].startswith("file://")


def _checks(port: int, process: subprocess.Popen) -> list[dict]:
    if process.poll() is not None:
        raise AssertionError(f"dagster-webserver exited with {process.returncode}")
    try:
        node = graphql(port, CHECKS, {"path": KEY})["assetNodeOrError"]
        return node["assetChecksOrError"]["checks"]
    except (OSError, KeyError, TypeError, AssertionError):  # still loading the code location
        return []
