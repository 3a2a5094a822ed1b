"""promtool and amtool on the shipped rules, their unit tests, the generated scrape config
and the Alertmanager example.  Debian's prometheus and prometheus-alertmanager packages
are installed by scripts/bootstrap: nothing here is skipped."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from plantstream.observability.ports import metrics_port
from plantstream.observability.prometheus_config import (
    prometheus_config,
    shipped_file,
    write_prometheus_config,
)
from plantstream.settings import Settings, load_settings

RULES = shipped_file("rules.yaml")
RULE_TESTS = shipped_file("rules_test.yaml")
ALERTMANAGER = shipped_file("alertmanager.example.yaml")


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    tool = shutil.which(str(argv[0]))
    assert tool is not None, f"{argv[0]} is missing: scripts/bootstrap installs Debian's prometheus packages"
    command = [tool, *map(str, argv[1:])]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def _alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_checks_the_rules() -> None:
    result = _run("promtool", "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {sum(len(g['rules']) for g in yaml.safe_load(RULES.read_text())['groups'])} rules found" in (
        result.stdout
    )


def test_promtool_unit_tests_pass() -> None:
    result = _run("promtool", "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test_with_a_firing_and_a_quiet_evaluation() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    evaluations: dict[str, list[list]] = {}
    for test in tests:
        for case in test.get("alert_rule_test", []):
            evaluations.setdefault(case["alertname"], []).append(case["exp_alerts"])
    for alert in _alerts():
        cases = evaluations.get(alert["alert"], [])
        assert any(cases), f"{alert['alert']}: no evaluation where it fires"
        assert any(not c for c in cases), f"{alert['alert']}: no evaluation where it stays quiet"


@pytest.mark.parametrize("alert", [a["alert"] for a in _alerts()])
def test_the_unit_tests_notice_a_broken_rule(alert: str, tmp_path: Path) -> None:
    """Each alert's expression replaced by one that never fires must fail promtool's tests:
    the tests really depend on the rule (they cannot pass by accident)."""
    doc = yaml.safe_load(RULES.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = "vector(1) == 0"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / "rules_test.yaml")
    result = _run("promtool", "test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert result.returncode != 0, f"promtool tests still pass with {alert} broken"
    assert f"alertname: {alert}" in result.stdout + result.stderr


def _settings(tmp_path: Path) -> Settings:
    return load_settings(
        state_dir=tmp_path / "state",
        site="plant-7",
        metrics={"enabled": True, "base_port": 21_000, "scrape_interval_seconds": 1.5},
        stream={"workers": 2},
    )


def test_generated_config_passes_promtool_and_scrapes_the_registry(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    path = write_prometheus_config(settings)
    (path.parent / "rules.d" / "local.yaml").write_text(
        "groups: [{name: local, rules: [{alert: LocalTest, expr: vector(1) == 0, for: 5s}]}]\n"
    )
    result = _run("promtool", "check", "config", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "local.yaml" in result.stdout and "rules.yaml" in result.stdout  # both rule files were checked

    config = prometheus_config(settings)
    assert config["global"]["scrape_interval"] == "1500ms"
    assert config["global"]["external_labels"] == {"site": "plant-7"}
    jobs = {c["job_name"]: c["static_configs"][0] for c in config["scrape_configs"]}
    assert jobs["stream"]["targets"] == [
        f"127.0.0.1:{metrics_port(settings, 'stream', 0)}",
        f"127.0.0.1:{metrics_port(settings, 'stream', 1)}",
    ]
    assert jobs["gateway"]["targets"] == [f"127.0.0.1:{metrics_port(settings, 'gateway')}"]
    assert all(c["labels"] == {"site": "plant-7"} for c in jobs.values())


def test_a_broken_local_rule_file_fails_the_config_check(tmp_path: Path) -> None:
    path = write_prometheus_config(_settings(tmp_path))
    (path.parent / "rules.d" / "broken.yaml").write_text("groups: [{name: x, rules: [{alert: X, expr: 'rate(('}]}]\n")
    result = _run("promtool", "check", "config", path)
    assert result.returncode != 0


def test_amtool_accepts_the_alertmanager_example() -> None:
    result = _run("amtool", "check-config", ALERTMANAGER)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=PlantstreamServiceDown", "severity=critical", "service=tansu"], "on-call-pager"),
        (["alertname=PlantstreamMachineStale", "severity=warning"], "shop-floor"),
        (["alertname=PlantstreamDagsterAssetStale", "severity=warning"], "data-platform"),
        (["alertname=PlantstreamConsumerLagHigh", "severity=warning"], "plant-operations"),
    ],
)
def test_alertmanager_example_routes_each_kind_of_alert(labels: list[str], receiver: str) -> None:
    result = _run("amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_every_alert_names_its_severity_and_explains_itself() -> None:
    for alert in _alerts():
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert {"summary", "description"} <= set(alert["annotations"]), alert["alert"]
        assert re.fullmatch(r"Plantstream[A-Z][A-Za-z0-9]+", alert["alert"]), alert["alert"]
