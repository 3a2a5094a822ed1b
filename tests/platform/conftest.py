"""A private platform instance per test (own state dir and ports), for tests that stop,
kill or break services and so must not touch the shared session platform."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from plantstream.services.process import group_members, read_pid_file, wait_until
from plantstream.services.spec import pid_path
from plantstream.services.supervisor import ALL_SERVICES, LocalPlatform
from plantstream.settings import Settings


@pytest.fixture
def make_platform(tmp_path: Path, settings_factory: Callable[..., Settings]) -> Iterator[Callable[..., LocalPlatform]]:
    """``make_platform(services=...)`` -> a not-yet-started LocalPlatform on its own ports.

    Whatever it ran is stopped at the end of the test, also when the test fails, and the
    test fails if any process of it is still alive afterwards (no orphans).
    """
    made: list[LocalPlatform] = []

    def make(services: tuple[str, ...] = ALL_SERVICES, **overrides: object) -> LocalPlatform:
        settings = settings_factory(tmp_path / f"state{len(made)}", **overrides)
        platform = LocalPlatform(settings, services=services, die_with_parent=True)
        made.append(platform)
        return platform

    yield make
    leftovers: list[int] = []
    for platform in made:
        pids = [s.pid for s in platform.status(probe=False) if s.pid]
        platform.down(services=ALL_SERVICES)
        leftovers += [p for p in pids if group_members(p)]
    assert not leftovers, f"processes left after down: {leftovers}"


def _kill9(settings: Settings, services: tuple[str, ...] = ALL_SERVICES) -> list[int]:
    """SIGKILL every running service's whole process group (a crash, not a stop)."""
    killed = []
    for name in services:
        rec = read_pid_file(pid_path(settings, name))
        if rec is not None and rec.alive():
            os.killpg(rec.pid, signal.SIGKILL)
            killed.append(rec.pid)
    wait_until(lambda: not any(group_members(p) for p in killed), timeout=10, what="killed groups gone")
    return killed


@pytest.fixture
def kill9() -> Callable[..., list[int]]:
    """``kill9(settings, services=...)``: SIGKILL the services' process groups, wait until gone."""
    return _kill9
