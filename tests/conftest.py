"""Shared fixtures: free ports, a real local platform per test session, unique names.

``platform_settings`` starts SeaweedFS, Tansu and the hot store (real processes, not
mocks) under a temporary state dir on free loopback ports, so tests never collide with
a developer's running platform (default ports) or with each other's instances.
``mlflow_settings`` adds the MLflow server to the same instance (it takes ~5 s and
~500 MB, so only tests that need it pay for it).  The services are started with
``PR_SET_PDEATHSIG`` and stopped by the fixture finalizer, so neither failing tests
nor a killed pytest leave orphans.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from plantstream.services.supervisor import CORE_SERVICES, LocalPlatform
from plantstream.settings import Settings, load_settings

# SeaweedFS listens on each HTTP port and on port + 10000 (gRPC); ports in this range keep
# both below the kernel's ephemeral range (32768+), where outgoing connections take ports.
_PORT_LOW, _PORT_HIGH = 11_000, 22_700
_GRPC_OFFSET = 10_000
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_free_port(*, with_grpc: bool = False) -> int:
    """A loopback port that is free now and not handed out before in this session.

    ``with_grpc``: port + 10000 must be free too (SeaweedFS derives its gRPC ports so).
    """
    rng = uuid.uuid4().int
    span = _PORT_HIGH - _PORT_LOW
    for i in range(span):
        port = _PORT_LOW + (rng + i * 7919) % span
        needed = [port, port + _GRPC_OFFSET] if with_grpc else [port]
        if any(p in _handed_out for p in needed):
            continue
        if all(_bindable(p) for p in needed):
            _handed_out.update(needed)
            return port
    raise RuntimeError("no free loopback port found")


def isolated_settings(state_dir: Path, **overrides: Any) -> Settings:
    """Settings for a private platform instance: own state dir, free ports for everything."""
    s3_port = pick_free_port(with_grpc=True)
    values: dict[str, Any] = {
        "state_dir": state_dir,
        "kafka": {"bootstrap_servers": f"127.0.0.1:{pick_free_port()}"},
        "s3": {"endpoint_url": f"http://127.0.0.1:{s3_port}"},
        "hotstore": {"host": "127.0.0.1", "port": pick_free_port()},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{pick_free_port()}"},
        "local_ports": {
            "seaweed_master": pick_free_port(with_grpc=True),
            "seaweed_volume": pick_free_port(with_grpc=True),
            "seaweed_filer": pick_free_port(with_grpc=True),
            "seaweed_admin": pick_free_port(with_grpc=True),
            "seaweed_webdav": pick_free_port(),
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return load_settings(**values)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    """``settings_factory(state_dir, **overrides)``: settings for a private platform instance."""
    return isolated_settings


@pytest.fixture
def free_port() -> Callable[[], int]:
    """``free_port()`` -> a free loopback port (for servers a test starts itself)."""
    return pick_free_port


@pytest.fixture(scope="session")
def platform_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of a running local platform (S3, Kafka, hot store) private to this session."""
    settings = isolated_settings(tmp_path_factory.mktemp("platform") / "state")
    platform = LocalPlatform(settings, services=CORE_SERVICES, die_with_parent=True)
    platform.up()  # on failure this raises PlatformError with the failing service's log tail
    try:
        yield settings
    finally:
        platform.down()


@pytest.fixture(scope="session")
def mlflow_settings(platform_settings: Settings) -> Iterator[Settings]:
    """``platform_settings`` with the MLflow server of the same instance running too."""
    platform = LocalPlatform(platform_settings, services=["mlflow"], die_with_parent=True)
    platform.up()
    try:
        yield platform_settings
    finally:
        platform.down()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[..., str]:
    """``unique_name("topic")`` -> ``topic-<test name>-<random>``: valid for topics, buckets, tables.

    Lower case, at most 63 characters (the S3 bucket limit); ``sep="_"`` gives a name that
    is also a plain SQL identifier (for hot-store tables).
    """
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")

    def make(prefix: str = "t", *, sep: str = "-") -> str:
        suffix = uuid.uuid4().hex[:8]
        room = 63 - len(prefix) - len(suffix) - 2
        name = f"{prefix}-{slug[:room].strip('-')}-{suffix}"
        return name.replace("-", sep)

    return make
