"""The Grafana dashboards, checked without Grafana (not installable here): the JSON in the
wheel is what the builder makes, it has the structure Grafana's dashboard model needs,
and every query names metrics of the scheme.  That each of those metrics is really
served is checked live in test_monitoring_live.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from plantstream.observability.dashboards import (
    PENDING_METRICS,
    PROMETHEUS_SERIES,
    dashboards,
    datasource_yaml,
    grafana_dir,
    metric_names,
    queries,
    render,
    shipped_dashboards,
    write_provisioning,
)
from plantstream.observability.prometheus_config import shipped_file
from plantstream.observability.scheme import PREFIX
from plantstream.settings import load_settings

PANEL_TYPES = {"timeseries", "stat", "bargauge", "table", "gauge", "state-timeline", "piechart"}


def test_the_shipped_json_is_what_the_builder_makes() -> None:
    built = dashboards()
    for name, dashboard in built.items():
        on_disk = (grafana_dir() / name).read_text()
        assert on_disk == render(dashboard), f"{name} is stale: python -m plantstream.observability.dashboards"
    assert set(shipped_dashboards()) == set(built)


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_has_the_structure_grafana_loads(name: str) -> None:
    d = shipped_dashboards()[name]
    assert isinstance(d["uid"], str) and 0 < len(d["uid"]) <= 40
    assert d["title"].startswith("PlantStream / ")
    assert isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    occupied: set[tuple[int, int]] = set()
    for panel in d["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        g = panel["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")) and g["w"] > 0 and g["x"] + g["w"] <= 24
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]
            assert 'site=~"$site"' in target["expr"], f"{panel['title']}: every query filters on the site"
            for var in ("$flow", "$gateway"):
                if var in target["expr"]:
                    assert var[1:] in variables, f"{panel['title']} uses {var} but the dashboard has no such variable"
    json.dumps(d)  # plain JSON all the way down


def test_every_query_names_a_metric_of_the_scheme_or_of_prometheus() -> None:
    recorded = {
        r["record"] for g in yaml.safe_load(shipped_file("rules.yaml").read_text())["groups"] for r in g["rules"]
        if "record" in r
    }  # fmt: skip
    for name, d in shipped_dashboards().items():
        for title, expr in queries(d):
            names = metric_names(expr)
            assert names, f"{name} / {title}: no metric in {expr!r}"
            for metric in names:
                assert metric.startswith(PREFIX) or metric in PROMETHEUS_SERIES or metric in recorded, (
                    f"{name} / {title}: {metric!r} is neither a PlantStream metric nor a Prometheus series"
                )
    used = {m for d in shipped_dashboards().values() for _t, e in queries(d) for m in metric_names(e)}
    assert used >= PENDING_METRICS, "a pending metric no dashboard uses: drop it from PENDING_METRICS"


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{x="by (y)"}[5m]))', {"a_bucket"}),
        (
            "histogram_quantile(0.99, sum by (sink, le) (rate(b_seconds_bucket[$__rate_interval])))",
            {"b_seconds_bucket"},
        ),
        ("x / ignoring (dir) y > 0.5 and on (site) z", {"x", "y", "z"}),
        ('count by (alertname) (ALERTS{alertstate="firing"})', {"ALERTS"}),
        ("(time() - max by (asset) (c)) / 3600", {"c"}),
        ('label_values(up{job="gateway"}, instance)', {"up"}),
        ("plantstream:stream_events_in:rate5m offset 1h", {"plantstream:stream_events_in:rate5m"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_provisioning_points_grafana_at_this_platforms_prometheus_and_the_dashboards(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, metrics={"base_port": 23_000, "scrape_interval_seconds": 2})
    datasources, providers = write_provisioning(settings, tmp_path / "provisioning")
    source = yaml.safe_load(datasources.read_text())["datasources"][0]
    assert source["url"] == "http://127.0.0.1:23001" and source["type"] == "prometheus"
    assert source["jsonData"]["timeInterval"] == "2s"
    provider = yaml.safe_load(providers.read_text())["providers"][0]
    assert sorted(p.name for p in Path(provider["options"]["path"]).glob("*.json")) == sorted(dashboards())
    # The shipped default is the same document for the default settings.
    default = load_settings(state_dir=tmp_path)
    shipped = yaml.safe_load((grafana_dir() / "datasources.yaml").read_text())
    assert shipped == yaml.safe_load(datasource_yaml(default))
