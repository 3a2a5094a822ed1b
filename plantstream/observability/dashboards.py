"""Grafana dashboards as code: built here, shipped as JSON in ``grafana/``.

``python -m plantstream.observability.dashboards`` rewrites the JSON files from
:func:`dashboards` (a test fails when they differ, so the JSON in the wheel is always
what this module builds).  Three dashboards, one concern each:

* **Plant overview** - OEE by line (the current shift so far), machine states, open plant
  alerts (the stream's ``streaming/plant_gauges.py``) and the firing operational alerts;
* **Pipeline health** - consumer lag, throughput, latency, dead letters, sinks, the failure
  model in use and its scores, the hot store, the platform's services and disks, Dagster
  freshness;
* **Edge** - buffers against their bounds, events in and out, reconnects, staleness.

Every query filters on the ``site`` variable (the label the scrape config adds) and
uses the ``datasource`` variable, so the same JSON serves every site and Prometheus.
:func:`write_provisioning` writes Grafana's provisioning files for a local platform.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from plantstream.observability.ports import metrics_port
from plantstream.settings import Settings

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SITE = 'site=~"$site"'
DAGSTER_LAST = "plantstream_dagster_asset_last_materialization_timestamp_seconds"
RATE = "$__rate_interval"

#: Metrics the dashboards use that no component serves yet (a branch in progress names its
#: metrics here first; the live test prints them).  Empty: every panel reads served metrics.
PENDING_METRICS: frozenset[str] = frozenset()
#: Series Prometheus makes itself (not scraped from a component).
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"})


def _panel(kind: str, title: str, targets: list[tuple[str, str]], *, unit: str = "short", **extra: Any) -> dict:
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": extra.pop("options", {}),
        **extra,
    }


def _dashboard(uid: str, title: str, description: str, rows: list[list[dict]], variables: list[dict]) -> dict:
    """Lay panels out in rows of equal width (24 grid columns), ids in reading order."""
    panels, y, pid = [], 0, 1
    for row in rows:
        width = 24 // len(row)
        for i, panel in enumerate(row):
            panels.append({"id": pid, "gridPos": {"h": 8, "w": width, "x": i * width, "y": y}, **panel})
            pid += 1
        y += 8
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["plantstream"],
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": [_datasource_variable(), _site_variable(), *variables]},
        "annotations": {"list": []},
        "panels": panels,
    }


def _datasource_variable() -> dict:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "hide": 0}


def _site_variable() -> dict:
    return _query_variable("site", "label_values(up, site)")


def _query_variable(name: str, query: str) -> dict:
    return {
        "name": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
    }


def _rate(metric: str, sel: str, by: str = "", fn: str = "rate") -> str:
    """``sum [by (...)] (rate(metric{sel}[$__rate_interval]))``."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({fn}({metric}{{{sel}}}[{RATE}]))"


def _quantile(q: float, histogram: str, sel: str, by: str = "") -> str:
    """The ``q`` quantile of a histogram over the rate interval, per ``by``."""
    grouping = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({grouping}) (rate({histogram}_bucket{{{sel}}}[{RATE}])))"


def _agg(fn: str, metric: str, sel: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"{fn}{grouping} ({metric}{{{sel}}})"


def plant_overview() -> dict:
    shift = f'{SITE}, kind="shift"'
    oee = [
        (_agg("avg", f"plantstream_oee_{factor}_ratio", shift, "line"), f"{{{{line}}}} {factor}")
        for factor in ("availability", "performance", "quality")
    ]
    return _dashboard(
        "plantstream-plant",
        "PlantStream / Plant overview",
        "OEE by line, machine states and alerts: what a shift lead looks at first.",
        [
            [
                _panel("stat", "OEE by line (shift so far)",
                       [(_agg("avg", "plantstream_oee_ratio", shift, "line"), "{{line}}")],
                       unit="percentunit"),
                _panel("bargauge", "OEE factors by line", oee, unit="percentunit"),
            ],
            [
                _panel("timeseries", "Machines by state and line",
                       [(_agg("sum", "plantstream_machines", SITE, "line, state"), "{{line}} {{state}}")]),
                _panel("stat", "Machines not answering the gateway",
                       [(_agg("sum", "plantstream_edge_stale_machines", SITE), "stale")]),
                _panel("stat", "Events per second into Kafka",
                       [(_rate("plantstream_edge_events_out_total", SITE), "events/s")], unit="ops"),
            ],
            [
                _panel("table", "Open plant alerts by line",
                       [(_agg("sum", "plantstream_plant_alerts_open", SITE, "line, severity"),
                         "{{line}} {{severity}}")]),
                _panel("table", "Firing operational alerts",
                       [(_agg("count", "ALERTS", f'alertstate="firing", {SITE}', "alertname, severity"),
                         "{{alertname}}")]),
            ],
        ],
        [],
    )  # fmt: skip


def pipeline_health() -> dict:
    sel = f'{SITE}, flow=~"$flow"'
    latency = "plantstream_stream_processing_latency_seconds"
    return _dashboard(
        "plantstream-pipeline",
        "PlantStream / Pipeline health",
        "Consumer lag, throughput, latency and dead letters of the dataflows; the hot store, platform and lakehouse.",
        [
            [
                _panel("timeseries", "Consumer lag per partition (committed: what a restart would replay)",
                       [(_agg("max", "plantstream_stream_committed_lag_messages", sel, "flow, topic, partition"),
                         "{{flow}} {{topic}}[{{partition}}]")]),
                _panel("timeseries", "Live lag (the running flow's own fetches)",
                       [(_agg("max", "plantstream_stream_consumer_lag_messages", sel, "flow, partition"),
                         "{{flow}}[{{partition}}]")]),
            ],
            [
                _panel("timeseries", "Throughput",
                       [(_rate("plantstream_stream_events_in_total", sel, "flow"), "{{flow}} in"),
                        (_rate("plantstream_stream_rows_written_total", sel, "flow, sink"), "{{flow}} -> {{sink}}"),
                        (_rate("plantstream_kafka_log_end_offset", SITE, "topic"), "{{topic}} produced")],
                       unit="ops"),
                _panel("timeseries", "Latency ingest -> written (p50, p99)",
                       [(_quantile(0.5, latency, sel, "sink"), "p50 {{sink}}"),
                        (_quantile(0.99, latency, sel, "sink"), "p99 {{sink}}")], unit="s"),
                _panel("timeseries", "Latency from the source timestamp (p99)",
                       [(_quantile(0.99, "plantstream_stream_source_to_processed_seconds", sel), "processed"),
                        (_quantile(0.99, "plantstream_stream_source_to_committed_seconds", sel, "sink"),
                         "committed {{sink}}")], unit="s"),
            ],
            [
                _panel("timeseries", "Dead letters by reason, late events",
                       [(_rate("plantstream_stream_dead_letters_total", sel, "reason"), "{{reason}}"),
                        (_rate("plantstream_stream_late_events_total", sel), "late")], unit="ops"),
                _panel("timeseries", "Sink writes (p99 duration, median rows)",
                       [(_quantile(0.99, "plantstream_stream_sink_write_duration_seconds", sel, "sink"), "{{sink}} s"),
                        (_quantile(0.5, "plantstream_stream_sink_batch_rows", sel, "sink"), "{{sink}} rows")]),
                _panel("stat", "Failure model in use",
                       [(_agg("max", "plantstream_inference_model_version_info", SITE, "model, version"),
                         "{{model}} v{{version}}")]),
                _panel("timeseries", "Failure scores published, samples left unscored",
                       [(_rate("plantstream_inference_scores_total", sel, "model"), "{{model}} scores"),
                        (_rate("plantstream_inference_unscored_total", sel, "model"), "{{model}} unscored")],
                       unit="ops"),
                _panel("timeseries", "Window state",
                       [(_agg("sum", "plantstream_stream_open_windows", sel, "flow"), "{{flow}} open windows"),
                        (_agg("sum", "plantstream_stream_tracked_machines", sel, "flow"), "{{flow}} machines"),
                        (_rate("plantstream_stream_sequence_gaps_total", sel, "flow", fn="increase"),
                         "{{flow}} sequence gaps")]),
            ],
            [
                _panel("timeseries", "Hot store requests and errors",
                       [(_rate("plantstream_hotstore_requests_total", SITE, "kind"), "{{kind}}"),
                        (_rate("plantstream_hotstore_request_errors_total", SITE, "kind"), "{{kind}} errors"),
                        (_rate("plantstream_hotstore_inserted_rows_total", SITE), "rows inserted")], unit="ops"),
                _panel("timeseries", "Hot store request duration (p99)",
                       [(_quantile(0.99, "plantstream_hotstore_request_duration_seconds", SITE, "kind"), "{{kind}}")],
                       unit="s"),
            ],
            [
                _panel("stat", "Components answering /metrics", [(f"up{{{SITE}}}", "{{job}} {{instance}}")]),
                _panel("stat", "Platform services", [(f"plantstream_platform_service_up{{{SITE}}}", "{{service}}")]),
                _panel("timeseries", "State directory",
                       [(_agg("sum", "plantstream_platform_state_bytes", SITE, "dir"), "{{dir}}"),
                        (_agg("min", "plantstream_platform_filesystem_avail_bytes", SITE), "free")], unit="bytes"),
                _panel("table", "Dagster: hours since last materialisation",
                       [(f"(time() - {_agg('max', DAGSTER_LAST, SITE, 'asset')}) / 3600", "{{asset}}")], unit="h"),
            ],
        ],
        [_query_variable("flow", "label_values(plantstream_stream_events_in_total, flow)")],
    )  # fmt: skip


def edge() -> dict:
    gw = f'{SITE}, instance=~"$gateway"'
    return _dashboard(
        "plantstream-edge",
        "PlantStream / Edge",
        "The gateways: durable buffers against their bounds, events in and out, reconnects, stale machines.",
        [
            [
                _panel("timeseries", "Buffered events and bound",
                       [(_agg("sum", "plantstream_edge_buffer_events", gw, "instance"), "{{instance}} buffered"),
                        (_agg("max", "plantstream_edge_buffer_max_events", gw, "instance"), "{{instance}} bound")]),
                _panel("timeseries", "Buffered bytes and bound",
                       [(_agg("sum", "plantstream_edge_buffer_bytes", gw, "instance"), "{{instance}} bytes"),
                        (_agg("max", "plantstream_edge_buffer_max_bytes", gw, "instance"), "{{instance}} bound")],
                       unit="bytes"),
                _panel("timeseries", "Oldest buffered event",
                       [(_agg("max", "plantstream_edge_buffer_oldest_age_seconds", gw, "instance"), "{{instance}}")],
                       unit="s"),
            ],
            [
                _panel("timeseries", "Events in (stored) and out (acknowledged by Kafka)",
                       [(_rate("plantstream_edge_events_in_total", gw, "protocol"), "in {{protocol}}"),
                        (_rate("plantstream_edge_events_out_total", gw, "protocol"), "out {{protocol}}")], unit="ops"),
                _panel("timeseries", "Losses and repeats",
                       [(_rate("plantstream_edge_buffer_dropped_total", gw, "policy", fn="increase"),
                         "dropped ({{policy}})"),
                        (_rate("plantstream_edge_repeats_skipped_total", gw, "protocol", fn="increase"),
                         "repeats {{protocol}}")]),
            ],
            [
                _panel("timeseries", "Reconnects per protocol",
                       [(_rate("plantstream_edge_reconnects_total", gw, "protocol", fn="increase"), "{{protocol}}")]),
                _panel("stat", "Kafka reachable",
                       [(_agg("min", "plantstream_edge_kafka_up", gw, "instance"), "{{instance}}")]),
                _panel("timeseries", "Producer recoveries",
                       [(_rate("plantstream_edge_producer_recreated_total", gw, fn="increase"), "recreated"),
                        (_rate("plantstream_edge_unverified_acks_total", gw, fn="increase"), "unverified acks"),
                        (_rate("plantstream_edge_reconciled_total", gw, fn="increase"), "reconciled")]),
            ],
            [
                _panel("timeseries", "Stale machines",
                       [(_agg("sum", "plantstream_edge_stale_machines", gw, "instance"), "{{instance}}"),
                        (_rate("plantstream_edge_stale_transitions_total", gw, fn="increase"), "became stale")]),
                _panel("table", "Machines: connected and stale",
                       [(_agg("max", "plantstream_edge_connection_up", gw, "machine, protocol"),
                         "{{machine}} connected"),
                        (_agg("max", "plantstream_edge_machine_stale", gw, "machine"), "{{machine}} stale")]),
            ],
        ],
        [_query_variable("gateway", 'label_values(up{job="gateway"}, instance)')],
    )  # fmt: skip


def dashboards() -> dict[str, dict]:
    """File name -> dashboard JSON model."""
    return {"plant-overview.json": plant_overview(), "pipeline-health.json": pipeline_health(), "edge.json": edge()}


def grafana_dir() -> Path:
    return Path(str(files("plantstream.observability.grafana")))


def render(dashboard: dict) -> str:
    return json.dumps(dashboard, indent=2, sort_keys=False) + "\n"


def write_dashboards(directory: Path | None = None) -> list[Path]:
    directory = directory or grafana_dir()
    written = []
    for name, dashboard in dashboards().items():
        (directory / name).write_text(render(dashboard))
        written.append(directory / name)
    return written


def shipped_dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(grafana_dir().glob("*.json"))}


def queries(dashboard: dict) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every panel target and query variable."""
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            yield panel.get("title", ""), target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            yield f"variable {variable['name']}", variable["definition"]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])\s*(\()?")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                       "offset", "inf", "nan", "label_values", "query_result"})  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or a Grafana ``label_values(...)``) selects."""
    text = _STRING.sub('""', expr)
    label_values = re.match(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", text)
    if label_values:
        text = label_values.group(1)
    text = _RANGE.sub("", _MATCHERS.sub("", text))
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS or name[0].isdigit():
            continue
        names.add(name)
    return names


def datasource_yaml(settings: Settings) -> str:
    """Grafana datasource provisioning for the local platform's Prometheus."""
    interval = settings.metrics.scrape_interval_seconds
    return yaml.safe_dump(
        {
            "apiVersion": 1,
            "datasources": [
                {
                    "name": "PlantStream Prometheus",
                    "uid": "plantstream-prometheus",
                    "type": "prometheus",
                    "access": "proxy",
                    "url": f"http://127.0.0.1:{metrics_port(settings, 'prometheus')}",
                    "isDefault": True,
                    "jsonData": {"timeInterval": f"{interval:g}s"},
                }
            ],
        },
        sort_keys=False,
    )


def dashboards_yaml(dashboards_path: Path) -> str:
    """Grafana dashboard-provider provisioning pointing at ``dashboards_path``."""
    return yaml.safe_dump(
        {
            "apiVersion": 1,
            "providers": [
                {
                    "name": "plantstream",
                    "folder": "PlantStream",
                    "type": "file",
                    "disableDeletion": True,
                    "allowUiUpdates": False,
                    "updateIntervalSeconds": 60,
                    "options": {"path": str(dashboards_path), "foldersFromFilesStructure": False},
                }
            ],
        },
        sort_keys=False,
    )


def write_provisioning(settings: Settings, provisioning_dir: Path) -> list[Path]:
    """Grafana's ``provisioning/`` for this platform: datasources/ and dashboards/ (pointing at the wheel's JSON)."""
    out = []
    for sub, name, text in (
        ("datasources", "plantstream.yaml", datasource_yaml(settings)),
        ("dashboards", "plantstream.yaml", dashboards_yaml(grafana_dir())),
    ):
        (provisioning_dir / sub).mkdir(parents=True, exist_ok=True)
        path = provisioning_dir / sub / name
        path.write_text(text)
        out.append(path)
    return out


if __name__ == "__main__":
    for path in write_dashboards():
        print(path)
