"""Fixtures that run the hot store as a real subprocess on a free loopback port.

Every test talks to it with ``clickhouse-connect``, the client every PlantStream component
uses.  ``hotstore`` is one service shared by the module's tests; ``hotstore_factory``
gives a test its own service that it may stop, kill and restart on the same data.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client
from hotstore_process import HotstoreProcess


def _make(tmp_path_factory: pytest.TempPathFactory, name: str) -> HotstoreProcess:
    base = tmp_path_factory.mktemp(name)
    return HotstoreProcess(base / "hotstore", base / "state", base / "hotstore.log")


@pytest.fixture(scope="module")
def hotstore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HotstoreProcess]:
    service = _make(tmp_path_factory, "hotstore")
    service.start()
    try:
        yield service
    finally:
        service.ensure_stopped()


@pytest.fixture
def hotstore_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HotstoreProcess]:
    """A service of the test's own, not started yet (the test controls its lifecycle)."""
    service = _make(tmp_path_factory, "own-hotstore")
    try:
        yield service
    finally:
        service.ensure_stopped()


@pytest.fixture
def client(hotstore: HotstoreProcess) -> Iterator[Client]:
    c = hotstore.client()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def database(client: Client, request: pytest.FixtureRequest) -> str:
    """A fresh database per test, so tests sharing one service cannot see each other's tables."""
    name = "t_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_").lower()[:60]
    client.command(f"DROP DATABASE IF EXISTS {name}")
    client.command(f"CREATE DATABASE {name}")
    return name
