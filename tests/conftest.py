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
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plantstream.services.isolated import isolated_settings, pick_free_port
from plantstream.services.supervisor import CORE_SERVICES, LocalPlatform
from plantstream.settings import Settings


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


@pytest.fixture
def stream_settings(
    platform_settings: Settings, unique_name: Callable[..., str], tmp_path: Path
) -> Callable[..., Settings]:
    """``stream_settings(**stream_overrides)``: the session platform with private topics (a
    topic prefix), hot-store database, lake prefix and state dir (recovery, gateway buffer)
    for this test."""

    def make(**stream: object) -> Settings:
        base = unique_name("tel", sep="_")
        return platform_settings.model_copy(
            update={
                "state_dir": tmp_path / "state",
                "kafka": platform_settings.kafka.model_copy(update={"topic_prefix": f"{base}."}),
                "stream": platform_settings.stream.model_copy(update=stream),
                "hotstore": platform_settings.hotstore.model_copy(update={"database": base}),
                "lake": platform_settings.lake.model_copy(update={"prefix": f"test/{base}"}),
            }
        )

    return make
