"""The Dagster-side exporter: when each asset was last materialised.

``python -m plantstream.observability.dagster_exporter`` serves
``plantstream_dagster_asset_last_materialization_timestamp_seconds{asset}`` on
``metrics_port(settings, "dagster")``, read from the Dagster instance's event log
(``DagsterInstance.get()``: the instance of ``$DAGSTER_HOME``, the one ``dagster dev`` and
the daemon use).  Run it next to the Dagster deployment; the alert
``PlantstreamDagsterAssetStale`` fires on it.

Why a timestamp and not an age: Prometheus computes the age (``time() - ...``) at query
time, so the value stays right between scrapes and after an exporter restart, and a
dashboard can show "last run" directly.  ``asset`` is the asset key joined with ``/``
(the assets of one code location: tens, a bounded label).

The event log is read on scrape, at most once per ``min_interval_s`` (later scrapes in
that window get the cached answer): a few ms for tens of assets on SQLite.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


def asset_label(path: list[str]) -> str:
    return "/".join(path)


class DagsterAssetCollector(Collector):
    """Last materialisation per asset, from a Dagster instance's event log."""

    def __init__(self, instance: Any, *, min_interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._instance = instance
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, float], float] | None = None  # (read at, asset -> ts, read seconds)

    def last_materializations(self) -> dict[str, float]:
        """Asset -> epoch seconds of its latest materialisation (assets never materialised are left out)."""
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._min_interval_s:
                return self._cached[1]
            started = time.perf_counter()
            keys = list(self._instance.all_asset_keys())
            events = self._instance.get_latest_materialization_events(keys) if keys else {}
            latest = {asset_label(list(k.path)): entry.timestamp for k, entry in events.items() if entry is not None}
            self._cached = (now, latest, time.perf_counter() - started)
            return latest

    def collect(self) -> Iterator[GaugeMetricFamily]:
        latest = self.last_materializations()
        family = GaugeMetricFamily(
            "plantstream_dagster_asset_last_materialization_timestamp_seconds",
            "When the asset was last materialised (Dagster event log), epoch seconds.",
            labels=["asset"],
        )
        for asset, ts in sorted(latest.items()):
            family.add_metric([asset], ts)
        yield family
        if self._cached is not None:
            yield GaugeMetricFamily(
                "plantstream_dagster_exporter_read_duration_seconds",
                "How long the last read of the event log took.",
                value=self._cached[2],
            )


def dagster_registry(instance: Any, *, min_interval_s: float = 5.0) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(DagsterAssetCollector(instance, min_interval_s=min_interval_s))
    return registry


def main() -> int:
    """Serve until SIGTERM/SIGINT (``$DAGSTER_HOME`` names the instance)."""
    from dagster import DagsterInstance

    from plantstream.observability.server import serve_component
    from plantstream.settings import SettingsError, load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    instance = DagsterInstance.get()
    registry = dagster_registry(instance, min_interval_s=settings.metrics.scrape_interval_seconds)
    server = serve_component(settings, "dagster", registry, health=lambda: {"ok": True, "component": "dagster"})
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop.wait()
    server.close()
    instance.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
