"""The platform's Dagster (webserver + daemon, persistent instance) runs the lakehouse on its own,
and its UI, in a real browser, shows the groups and gold's partitions and runs a materialisation.

A simulated plant history is written to bronze; then the service ``platform up --with-dagster``
starts is started on this test's state dir.  Without anyone switching anything on, the
``bronze_versions`` sensor launches the silver refresh and ``gold_after_silver`` the gold days
it names.  Then Chromium (Debian's, driven by Playwright) opens the UI: every asset group,
``gold/oee``'s partitions, and a materialisation of one partition launched from the asset's
own dialog, followed on its run page until it succeeds.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request
from collections.abc import Iterator

import pytest
from waiting import wait_for

from plantstream.services.dagster_service import NAME as DAGSTER
from plantstream.services.dagster_service import dagster_home, webserver_url
from plantstream.services.isolated import pick_free_port
from plantstream.services.supervisor import LocalPlatform
from plantstream.settings import Settings
from plantstream.simulator.history import write_history

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"  # Debian's package (scripts/bootstrap installs it)
TODAY = dt.datetime.now(dt.UTC).date()
FIRST_DAY = TODAY - dt.timedelta(days=2)
GROUPS = {  # group -> an asset the group's page must list
    "kafka": "kafka / factory_machine_telemetry",
    "hot_store": "hotstore / telemetry_raw",
    "lakehouse": "silver / telemetry",
    "gold": "gold / oee",
    "warm": "warm / oee",
    "maintenance": "maintenance / hot_store_archive",
}


def graphql(settings: Settings, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{webserver_url(settings)}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


RUNS = """query($key: String!, $value: String!) {
  runsOrError(filter: {tags: [{key: $key, value: $value}]}) {
    ... on Runs { results { runId jobName status tags { key value } } } } }"""
LATEST = """query($path: [String!]!, $partitions: [String!]) {
  assetNodes(assetKeys: [{path: $path}]) { assetMaterializations(partitions: $partitions, limit: 5) {
    runId partition } } }"""


def runs_tagged(settings: Settings, key: str, value: str) -> list[dict]:
    return graphql(settings, RUNS, {"key": key, "value": value})["runsOrError"]["results"]


def succeeded(settings: Settings, key: str, value: str, job: str) -> dict | None:
    runs = [r for r in runs_tagged(settings, key, value) if r["jobName"] == job]
    failed = [r for r in runs if r["status"] in ("FAILURE", "CANCELED")]
    assert not failed, f"{job} run(s) started by {value} failed: {failed}"
    return next((r for r in runs if r["status"] == "SUCCESS"), None)


def materialised_by(settings: Settings, path: list[str], partition: str | None, run_id: str) -> bool:
    (node,) = graphql(settings, LATEST, {"path": path, "partitions": [partition] if partition else None})["assetNodes"]
    return any(m["runId"] == run_id for m in node["assetMaterializations"])


@pytest.fixture
def platform_dagster(platform_settings: Settings, unique_name, tmp_path) -> Iterator[Settings]:
    """This test's lake prefix, hot-store database and state dir, with the platform's Dagster running."""
    base = unique_name("ui", sep="_")
    settings = platform_settings.model_copy(
        update={
            "state_dir": tmp_path / "state",
            "hotstore": platform_settings.hotstore.model_copy(update={"database": base}),
            "lake": platform_settings.lake.model_copy(update={"prefix": f"test/{base}"}),
            "local_ports": platform_settings.local_ports.model_copy(update={"dagster_webserver": pick_free_port()}),
        }
    )
    start_ms = int(dt.datetime(FIRST_DAY.year, FIRST_DAY.month, FIRST_DAY.day, tzinfo=dt.UTC).timestamp() * 1000)
    write_history(settings, start_ms=start_ms, hours=48, machines=4, sample_period_s=60)  # two closed days
    platform = LocalPlatform(settings, services=[DAGSTER], die_with_parent=True)
    platform.up()
    # The UI greets a new instance with a "join the community" dialog over the page: seen.
    graphql(settings, "mutation { setNuxSeen }")
    try:
        yield settings
    finally:
        platform.down()


def test_platform_dagster_runs_the_lakehouse_and_its_ui_launches_a_gold_partition(platform_dagster) -> None:
    settings = platform_dagster
    assert (dagster_home(settings) / "dagster.yaml").read_text().count("sqlite") == 1  # a persistent instance
    assert (dagster_home(settings) / "storage").is_dir()

    # 1. Nobody switched anything on: the bronze sensor's silver run, then the gold days it named.
    silver = wait_for(
        lambda: succeeded(settings, "dagster/sensor_name", "bronze_versions", "lakehouse_refresh"),
        240,
        "the silver run the bronze_versions sensor launched",
        poll_s=1.0,
    )
    assert materialised_by(settings, ["silver", "telemetry"], None, silver["runId"])
    tags = {t["key"]: t["value"] for t in silver["tags"]}
    closed = (TODAY - dt.timedelta(days=1)).isoformat()
    assert tags["plantstream/gold_days_end"] == closed  # the history's days are closed days: gold follows
    gold = wait_for(
        lambda: succeeded(settings, "plantstream/after_run", silver["runId"], "gold_refresh"),
        240,
        "the gold run gold_after_silver requested after the silver run",
        poll_s=1.0,
    )
    assert materialised_by(settings, ["gold", "oee"], closed, gold["runId"])

    # 2. The UI: the groups, gold's partitions, and a materialisation launched from it.
    launched_day = FIRST_DAY.isoformat()
    before = {r["runId"] for r in runs_tagged(settings, "dagster/partition", launched_day)}
    page_texts = browse_and_launch(settings, launched_day)
    run = wait_for(
        lambda: next(
            (r for r in runs_tagged(settings, "dagster/partition", launched_day) if r["runId"] not in before), None
        ),
        60,
        "the run launched from the UI",
    )
    watch_run_page(settings, run["runId"])
    assert materialised_by(settings, ["gold", "oee"], launched_day, run["runId"])
    assert "Partitions" in page_texts["partitions"]


def _text(pattern: str) -> re.Pattern[str]:
    """``pattern`` with any whitespace (or none) between its words: labels and values are separate elements."""
    return re.compile(r"\s*".join(re.escape(word) for word in pattern.split()))


def browse_and_launch(settings: Settings, day: str) -> dict[str, str]:
    from playwright.sync_api import expect, sync_playwright

    url = webserver_url(settings)
    texts: dict[str, str] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            for group, asset in GROUPS.items():
                page.goto(f"{url}/locations/plantstream/asset-groups/{group}/list", wait_until="domcontentloaded")
                expect(page.locator("body")).to_contain_text(_text(asset), timeout=60_000)
            page.goto(f"{url}/assets/gold/oee?view=partitions", wait_until="domcontentloaded")
            body = page.locator("body")
            expect(body).to_contain_text(_text("Partitions"), timeout=60_000)
            expect(body).to_contain_text(day, timeout=60_000)
            expect(body).to_contain_text(re.compile(r"Materialized \(\d+\)"), timeout=60_000)
            texts["partitions"] = page.inner_text("body")
            page.get_by_role("button", name="Materialize…").first.click()
            partitions = page.get_by_placeholder("No matching partitions")
            partitions.click()
            partitions.fill(day)
            partitions.press("Enter")
            launch = page.get_by_role("button", name="Launch 1 run")
            expect(launch).to_be_enabled(timeout=30_000)
            launch.click()
            expect(page.locator("[role=dialog]")).to_have_count(0, timeout=30_000)
        finally:
            browser.close()
    return texts


def watch_run_page(settings: Settings, run_id: str) -> str:
    """Open the run's page and wait until it shows the run succeeded; returns the page text."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{webserver_url(settings)}/runs/{run_id}", wait_until="domcontentloaded")
            # The run's status badge follows its id in the page header ("Runs / 1a2b3c4d Success").
            header = re.compile(rf"Runs\s*/\s*{run_id[:8]}\s*Success")
            expect(page.locator("body")).to_contain_text(header, timeout=240_000)
            return page.inner_text("body")
        finally:
            browser.close()
