"""`dagster dev -w workspace.yaml` against a running platform shows the asset graph.

Starts the real Dagster webserver on the repository's workspace.yaml, asks its GraphQL
API for the asset nodes and their lineage, then opens the UI in a real browser
(Chromium from Debian, driven by Playwright) and reads what a user sees on the asset
pages: description, group, owner and upstream assets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from waiting import wait_for

from plantstream.settings import Settings, child_env

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
QUERY = "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"
CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/bootstrap installs it)


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def asset_nodes(port: int, process: subprocess.Popen) -> list[dict]:
    """The webserver's asset nodes, or [] while it is still starting."""
    if process.poll() is not None:
        raise AssertionError(f"dagster-webserver exited with {process.returncode}")
    try:
        return graphql(port, QUERY)["data"]["assetNodes"]
    except (OSError, KeyError, TypeError):
        return []


def test_webserver_shows_lineage_from_kafka_to_silver(platform_settings: Settings, free_port, tmp_path) -> None:
    port = free_port()
    env = child_env(platform_settings, DAGSTER_HOME=str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
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
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        nodes = wait_for(lambda: asset_nodes(port, process), 120, "the Dagster webserver's asset graph")
        pages = browse_asset_pages(
            port,
            {
                "silver/telemetry": [
                    "Silver telemetry (Telemetry events): bronze typed and unique per (machine_id, seq)",
                    "Upstream assets bronze / telemetry",
                    "Group lakehouse",
                    "Owners data-platform",
                ],
                "bronze/telemetry": ["Upstream assets kafka / factory_machine_telemetry"],
            },
        )
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the webserver runs the code location in child processes
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert {"kafka/factory_machine_telemetry", "bronze/telemetry", "silver/telemetry", "hotstore/telemetry_raw"} <= set(
        by_key
    )
    assert ["bronze", "telemetry"] in [d["path"] for d in by_key["silver/telemetry"]["dependencyKeys"]]
    assert by_key["silver/telemetry"]["groupName"] == "lakehouse"

    assert set(pages) == {"silver/telemetry", "bronze/telemetry"}


def browse_asset_pages(port: int, expected: dict[str, list[str]]) -> dict[str, str]:
    """Open each asset's page in Chromium and wait until it shows every expected text
    (words may be separated by any whitespace or none: labels and values are separate
    elements); returns each page's text."""
    from playwright.sync_api import expect, sync_playwright

    texts = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page()
            for key, snippets in expected.items():
                page.goto(f"http://127.0.0.1:{port}/assets/{key}", wait_until="domcontentloaded")
                for snippet in snippets:
                    shown = re.compile(r"\s*".join(re.escape(word) for word in snippet.split()))
                    expect(page.locator("body")).to_contain_text(shown, timeout=60_000)
                texts[key] = page.inner_text("body")
        finally:
            browser.close()
    return texts
