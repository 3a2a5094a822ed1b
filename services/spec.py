"""What the supervisor needs to know about one embedded service.

Each service module (``seaweedfs``, ``tansu``, ``hotstore_service``, ``mlflow_server``,
and for monitoring ``platform_exporter``, ``prometheus``) turns the settings into one
:class:`ServiceSpec`; the supervisor only ever deals with
specs, so adding a service never touches the start/stop/health machinery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from plantstream.settings import Settings


@dataclass(frozen=True)
class ServiceSpec:
    """A child process: how to start it, how to know it is healthy, where its data is."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)  # holds credentials: never print it
    host: str
    port: int
    data_dir: Path
    healthy: Callable[[], bool]  # one quick probe; exceptions count as "not healthy"
    start_timeout: float = 60.0
    stop_timeout: float = 15.0
    # Run once after the first successful probe (create buckets, a database, ...).
    after_healthy: Callable[[], None] | None = None
    # Remove leftovers that would block a restart (e.g. stale unix sockets); must be safe
    # to call when the service is not running.
    cleanup: Callable[[], None] | None = None
    # Run before each start (write a generated config, check a binary exists); an
    # exception fails the start with its message.
    prepare: Callable[[], None] | None = None
    extra_ports: dict[str, int] = field(default_factory=dict)
    # Directories the service needs besides ``data_dir``; created right before a start,
    # never when a spec is only built to inspect (``status`` must not create a state dir).
    dirs: tuple[Path, ...] = ()

    def all_ports(self) -> list[int]:
        return [self.port, *self.extra_ports.values()]


def host_port(url: str, default_port: int) -> tuple[str, int]:
    """``("127.0.0.1", 8333)`` from ``http://127.0.0.1:8333`` (or ``127.0.0.1:9092``)."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


def service_dir(settings: Settings, name: str) -> Path:
    return settings.state_dir / name


def log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def pid_path(settings: Settings, name: str) -> Path:
    return settings.state_dir / "run" / f"{name}.pid"
