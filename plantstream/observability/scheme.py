"""The metric naming scheme as code: what docs/observability.md says, checkable.

``tests/observability/test_metric_scheme.py`` runs :func:`scheme_problems` over every
component's registry, so a metric that breaks the scheme fails the build instead of
turning up in a dashboard review.

The rules (Prometheus' own conventions, plus PlantStream's label policy):

* names are ``plantstream_<subsystem>_<what>[_<unit>]`` in snake case; subsystems are
  :data:`SUBSYSTEMS`;
* base units only, spelled out at the end: ``_seconds``, ``_bytes``, ``_ratio`` (never
  ms, kb, percent);
* counters are exposed with ``_total`` (``prometheus_client`` appends it: declare them
  without it) and nothing else ends with ``_total``;
* labels come from :data:`ALLOWED_LABELS`: bounded sets an operator groups by.  ``machine``
  is allowed only on the per-machine state gauges in :data:`MACHINE_LABEL_METRICS`
  (cardinality = the plant's machines) and never together with a signal: a series per
  machine x signal belongs in the hot store, not in Prometheus.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "plantstream_"
SUBSYSTEMS = ("edge", "stream", "kafka", "hotstore", "platform", "exporter", "dagster", "oee", "machines", "plant",
              "inference")  # fmt: skip
#: Other names a registry may carry: prometheus_client's process and runtime collectors.
FOREIGN_PREFIXES = ("process_", "python_")
ALLOWED_LABELS = frozenset(
    {
        "site",  # added by the scrape config, not by components
        "area",
        "line",
        "flow",
        "topic",
        "partition",
        "sink",
        "reason",
        "protocol",
        "policy",
        "kind",
        "service",
        "dir",
        "part",
        "asset",
        "state",
        "severity",
        "rule",
        "model",
        "version",
        "machine",  # only MACHINE_LABEL_METRICS
    }
)
MACHINE_LABEL_METRICS = frozenset({"plantstream_edge_connection_up", "plantstream_edge_machine_stale"})
#: Words that name a quantity with a unit, and the base unit the name must end with.
_UNIT_WORDS = {
    "duration": "_seconds",
    "latency": "_seconds",
    "age": "_seconds",
    "timestamp": "_seconds",
    "bytes": "_bytes",
}
_NOT_BASE_UNITS = re.compile(r"_(ms|milliseconds|us|microseconds|minutes|hours|kb|mb|gb|kib|mib|percent)(_|$)")
_SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count", "_created")


@dataclass(frozen=True)
class MetricShape:
    """What the scheme looks at: the family name (without ``_total`` for counters), its type, its labels."""

    name: str
    type: str  # counter, gauge, histogram, summary, info, ...
    labels: frozenset[str]
    sample_names: frozenset[str] = frozenset()


def scheme_problems(shapes: Iterable[MetricShape]) -> list[str]:
    """Every rule a metric breaks, as readable sentences (empty: all good)."""
    problems = []
    for m in shapes:
        if m.name.startswith(FOREIGN_PREFIXES):
            continue
        said = f"{m.name} ({m.type})"
        if not m.name.startswith(PREFIX):
            problems.append(f"{said}: names start with {PREFIX}")
        elif m.name[len(PREFIX) :].split("_", 1)[0] not in SUBSYSTEMS:
            problems.append(f"{said}: the subsystem after {PREFIX} must be one of {SUBSYSTEMS}")
        if not _SNAKE.match(m.name):
            problems.append(f"{said}: snake case only")
        if _NOT_BASE_UNITS.search(m.name):
            problems.append(f"{said}: base units only (seconds, bytes, ratio)")
        words = m.name.split("_")
        for word, unit in _UNIT_WORDS.items():
            if word in words and not m.name.endswith(unit):
                problems.append(f"{said}: a {word} is measured in {unit[1:]}, so the name ends with {unit}")
        if m.type == "counter":
            if any(not s.endswith(("_total", "_created")) for s in m.sample_names):
                problems.append(f"{said}: counter samples end with _total")
        elif m.name.endswith("_total"):
            problems.append(f"{said}: only counters end with _total")
        for label in sorted(m.labels - ALLOWED_LABELS):
            problems.append(f"{said}: label {label!r} is not in the scheme (docs/observability.md, labels)")
        if "machine" in m.labels and m.name not in MACHINE_LABEL_METRICS:
            problems.append(f"{said}: a machine label only on {sorted(MACHINE_LABEL_METRICS)}")
    return problems


def registry_shapes(registry: object) -> list[MetricShape]:
    """The shapes of everything a ``CollectorRegistry`` serves.

    Label names come from the metric objects where they exist (a labelled metric that has
    no sample yet still declares them), else from the samples (custom collectors).
    """
    from prometheus_client.metrics import MetricWrapperBase

    shapes = []
    collectors = list(getattr(registry, "_collector_to_names", {}))
    for collector in collectors:
        declared = None
        if isinstance(collector, MetricWrapperBase):
            declared = frozenset(collector._labelnames)
        for family in collector.collect():
            from_samples = {k for s in family.samples for k in s.labels if k not in ("le", "quantile")}
            labels = declared if declared is not None else frozenset(from_samples)
            names = frozenset(s.name for s in family.samples)
            shapes.append(MetricShape(family.name, family.type, labels, names))
    return shapes


def exposed_names(shape: MetricShape) -> set[str]:
    """The sample names a family is scraped as (what a PromQL query refers to)."""
    if shape.type == "counter":
        return {shape.name + "_total"}
    if shape.type in ("histogram", "gaugehistogram"):
        return {shape.name + suffix for suffix in _HISTOGRAM_SUFFIXES[:3]}
    if shape.type == "summary":
        return {shape.name, shape.name + "_sum", shape.name + "_count"}
    if shape.type == "info":
        return {shape.name + "_info"}
    return {shape.name}
