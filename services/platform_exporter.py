"""Monitoring: the platform exporter (``python -m plantstream.observability.exporter``).

Consumer lag from the flows' recovery stores against the log end, state-directory disk
usage and per-service up gauges (see the module it runs).  Supervised like every
service; its ``/healthz`` answers 200 once its first cycle finished.
"""

from __future__ import annotations

import sys
import urllib.request

from plantstream.observability.ports import metrics_port
from plantstream.services.spec import ServiceSpec, service_dir
from plantstream.settings import Settings, child_env

NAME = "exporter"


def healthz(port: int, timeout: float = 2.0) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as resp:
        return resp.status == 200


def spec(settings: Settings) -> ServiceSpec:
    port = metrics_port(settings, NAME)
    return ServiceSpec(
        name=NAME,
        argv=[sys.executable, "-m", "plantstream.observability.exporter"],
        env=child_env(settings),
        host="127.0.0.1",
        port=port,
        data_dir=service_dir(settings, NAME),  # working directory only; it keeps no data
        healthy=lambda: healthz(port),
        start_timeout=60.0,
        stop_timeout=15.0,
    )
