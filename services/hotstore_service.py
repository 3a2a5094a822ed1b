"""Hot-store stand-in: ``python -m plantstream.services.hotstore`` (ClickHouse HTTP over chDB).

A chDB data path can be opened by one process at a time, so the hot tier is owned by
this one long-lived process and everybody else talks ClickHouse HTTP to it (the same
``clickhouse-connect`` client as in production).  It reads host, port and its data dir
(``state_dir/hotstore``) from the ``PLANTSTREAM_*`` environment.
"""

from __future__ import annotations

import sys
import urllib.request

from plantstream.connect.hotstore import ensure_database
from plantstream.services.spec import ServiceSpec, service_dir
from plantstream.settings import Settings, child_env

NAME = "hotstore"


def ping(host: str, port: int, timeout: float = 2.0) -> bool:
    """ClickHouse's liveness probe: ``GET /ping`` answers ``Ok.``."""
    with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=timeout) as resp:
        return resp.status == 200 and resp.read().strip() == b"Ok."


def spec(settings: Settings) -> ServiceSpec:
    hs = settings.hotstore
    data = service_dir(settings, NAME)
    return ServiceSpec(
        name=NAME,
        argv=[sys.executable, "-m", "plantstream.services.hotstore"],
        # TZ=UTC: chDB reports the serving process's time zone and clients follow it.
        env=child_env(settings, TZ="UTC"),
        host=hs.host,
        port=hs.port,
        data_dir=data,
        healthy=lambda: ping(hs.host, hs.port),
        start_timeout=60.0,
        stop_timeout=20.0,
        after_healthy=lambda: ensure_database(settings),
    )
