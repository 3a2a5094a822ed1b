"""The one place that assigns metrics ports.

Every component that serves ``/metrics`` binds :func:`metrics_port`, and the Prometheus
scrape configuration (:mod:`plantstream.observability.prometheus_config`) lists the same
ports through :func:`scrape_targets`, so a component and its scrape target cannot drift
apart.  Ports are offsets in one block starting at ``settings.metrics.base_port``: a
private platform (a test, a benchmark) moves every port at once by moving the base.
"""

from __future__ import annotations

from dataclasses import dataclass

from plantstream.settings import Profile, Settings


@dataclass(frozen=True)
class ComponentPorts:
    """Where a component's ports start in the block and how many instances it may have."""

    offset: int
    slots: int
    what: str


#: Component name (also the Prometheus job name) -> its place in the port block.
COMPONENTS: dict[str, ComponentPorts] = {
    "exporter": ComponentPorts(0, 1, "platform exporter: supervisor view, consumer lag, disk usage"),
    "prometheus": ComponentPorts(1, 1, "Prometheus itself (web UI, HTTP API, its own /metrics)"),
    "hotstore": ComponentPorts(2, 1, "hot-store service (chDB behind ClickHouse HTTP)"),
    "dagster": ComponentPorts(3, 1, "Dagster-side exporter (asset materialisations)"),
    "gateway": ComponentPorts(4, 4, "edge gateway K on this host"),
    "stream": ComponentPorts(8, 64, "dataflow process K (cluster member K; 0 when run in one process)"),
}
#: Ports the block spans; ``MetricsSettings.base_port`` keeps ``base + PORT_SPAN`` below 65536.
PORT_SPAN = max(c.offset + c.slots for c in COMPONENTS.values())


def metrics_port(settings: Settings, component: str, index: int = 0) -> int:
    """The port ``component`` instance ``index`` serves ``/metrics`` and ``/healthz`` on."""
    try:
        place = COMPONENTS[component]
    except KeyError:
        raise ValueError(f"unknown metrics component {component!r}; known: {sorted(COMPONENTS)}") from None
    if not 0 <= index < place.slots:
        raise ValueError(f"{component} index must be in 0..{place.slots - 1}, got {index}")
    return settings.metrics.base_port + place.offset + index


def metrics_host(settings: Settings) -> str:
    """Loopback locally; every interface in production, where Prometheus scrapes from elsewhere."""
    return "0.0.0.0" if settings.profile is Profile.PRODUCTION else "127.0.0.1"


def instance_counts(settings: Settings) -> dict[str, int]:
    """How many instances of each component a local platform runs (what gets scraped).

    Stream processes follow ``stream.workers`` (one process per worker, docs/streaming.md);
    one gateway per host.
    """
    return {name: (settings.stream.workers if name == "stream" else 1) for name in COMPONENTS}


def scrape_targets(settings: Settings) -> dict[str, list[str]]:
    """Job name -> ``host:port`` targets, from :func:`metrics_port` (the scrape config uses this)."""
    counts = instance_counts(settings)
    return {name: [f"127.0.0.1:{metrics_port(settings, name, k)}" for k in range(counts[name])] for name in COMPONENTS}
