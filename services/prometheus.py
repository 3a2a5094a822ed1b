"""Monitoring: Debian's ``prometheus``, scraping every component of the port registry.

Started by ``plantstream platform up --with-monitoring`` like the other services (own
session, pid file, log, health check).  Its TSDB lives in ``<state_dir>/prometheus/data``
and survives restarts; the configuration is regenerated from the settings before each
start (:mod:`plantstream.observability.prometheus_config`).  It listens on
``metrics_port(settings, "prometheus")``, loopback only; ``--web.enable-lifecycle`` lets
``POST /-/reload`` pick up changed rule files without a restart.
"""

from __future__ import annotations

import os
import shutil
import urllib.request

from plantstream.observability.ports import metrics_port
from plantstream.observability.prometheus_config import prometheus_dir, write_prometheus_config
from plantstream.services.spec import ServiceSpec
from plantstream.settings import Settings

NAME = "prometheus"
#: Debian 12's package (scripts/bootstrap installs it).
BINARY = "prometheus"
RETENTION = "15d"


def binary() -> str:
    found = shutil.which(BINARY)
    if found is None:
        raise FileNotFoundError(
            f"{BINARY} not found on PATH: install Debian's prometheus package (scripts/bootstrap does)"
        )
    return found


def ready(port: int, timeout: float = 2.0) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=timeout) as resp:
        return resp.status == 200


def _prepare(settings: Settings) -> None:
    """Before each start: fail clearly if the binary is missing; regenerate the config."""
    binary()
    write_prometheus_config(settings)


def spec(settings: Settings) -> ServiceSpec:
    port = metrics_port(settings, NAME)
    data = prometheus_dir(settings)
    # Nothing of PlantStream's (credentials included) in its environment: it needs none.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANTSTREAM_", "AWS_"))}
    return ServiceSpec(
        name=NAME,
        argv=[
            shutil.which(BINARY) or BINARY,
            f"--config.file={data / 'prometheus.yml'}",
            f"--storage.tsdb.path={data / 'data'}",
            f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        env=env,
        host="127.0.0.1",
        port=port,
        data_dir=data,
        healthy=lambda: ready(port),
        start_timeout=60.0,
        stop_timeout=15.0,
        prepare=lambda: _prepare(settings),
    )
