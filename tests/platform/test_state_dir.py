"""One platform per user, found from any folder; never a second one on top of a running one.

The default state dir is per user (``$XDG_STATE_HOME/plantstream``), so these tests point
``XDG_STATE_HOME`` at a temporary directory: nothing here touches the real per-user dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from plantstream.services.isolated import isolated_settings
from plantstream.services.spec import pid_path
from plantstream.services.supervisor import LocalPlatform, PlatformError, port_holder
from plantstream.settings import Settings, child_env

pytestmark = pytest.mark.integration
S3_AND_KAFKA = ("seaweedfs", "tansu")


def _cli(
    settings: Settings, *args: str, cwd: Path, xdg: Path, default_state_dir: bool = False
) -> subprocess.CompletedProcess[str]:
    """``plantstream platform ...`` as a user runs it: own folder, own XDG_STATE_HOME."""
    env = child_env(settings, XDG_STATE_HOME=str(xdg))
    if default_state_dir:
        del env["PLANTSTREAM_STATE_DIR"]
    return subprocess.run(
        [str(Path(sys.executable).parent / "plantstream"), "platform", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_status_and_down_create_nothing(tmp_path: Path, settings_factory: Callable[..., Settings]) -> None:
    xdg, folder = tmp_path / "xdg", tmp_path / "somewhere"
    folder.mkdir()
    settings = settings_factory(xdg / "plantstream")  # what the default resolves to, on free ports
    status = _cli(settings, "status", "--json", cwd=folder, xdg=xdg, default_state_dir=True)
    assert status.returncode == 1, status.stderr
    payload = json.loads(status.stdout)
    assert payload["state_dir"] == str(xdg / "plantstream")
    assert not any(s["running"] for s in payload["services"])
    down = _cli(settings, "down", cwd=folder, xdg=xdg, default_state_dir=True)
    assert down.returncode == 0, down.stderr
    assert not xdg.exists()
    assert _tree(folder) == []  # no ./.state either


def test_status_finds_the_users_platform_from_any_folder(
    tmp_path: Path, settings_factory: Callable[..., Settings]
) -> None:
    xdg = tmp_path / "xdg"
    settings = settings_factory(xdg / "plantstream")
    platform = LocalPlatform(settings, services=S3_AND_KAFKA, die_with_parent=True)
    platform.up()
    try:
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            status = _cli(settings, "status", "--json", cwd=folder, xdg=xdg, default_state_dir=True)
            payload = json.loads(status.stdout)
            assert payload["state_dir"] == str(settings.state_dir)
            running = {s["name"]: s["healthy"] for s in payload["services"]}
            assert running["seaweedfs"] and running["tansu"], payload
            assert _tree(folder) == []
    finally:
        platform.down()


@pytest.mark.slow  # starts two platforms (~24 s)
def test_a_second_platform_on_the_same_ports_is_refused_naming_the_running_one(
    make_platform: Callable[..., LocalPlatform], tmp_path: Path
) -> None:
    running = make_platform(S3_AND_KAFKA)
    first = running.up()
    other = running.settings.model_copy(update={"state_dir": tmp_path / "other-state"})

    with pytest.raises(PlatformError) as info:
        LocalPlatform(other, services=S3_AND_KAFKA, die_with_parent=True).up()
    assert info.value.service == "seaweedfs"  # the first service whose ports are taken
    assert f"state dir {running.settings.state_dir}" in info.value.reason
    assert str(other.state_dir) in info.value.reason
    assert not pid_path(other, "seaweedfs").exists() and not pid_path(other, "tansu").exists()

    # Only the Kafka port shared: S3 comes up for the second platform, Kafka is refused
    # naming the running broker's state dir, and what this `up` started is stopped again.
    fresh = isolated_settings(tmp_path / "half-state")
    half = fresh.model_copy(update={"kafka": running.settings.kafka})
    with pytest.raises(PlatformError) as info:
        LocalPlatform(half, services=S3_AND_KAFKA, die_with_parent=True).up()
    assert info.value.service == "tansu"
    assert f"state dir {running.settings.state_dir} (its tansu" in info.value.reason
    assert not any(s.running for s in LocalPlatform(half, services=S3_AND_KAFKA).status(probe=False))

    # The running platform was not disturbed.
    assert [s.pid for s in running.status()] == [s.pid for s in first.services]
    assert all(s.healthy for s in running.status())

    # The same through the CLI: exit 1, the running platform's state dir named; `status`
    # of the other state dir says who holds its ports; its `down` leaves the running one alone.
    up = _cli(other, "up", cwd=tmp_path, xdg=tmp_path / "xdg")
    assert up.returncode == 1, up.stderr
    assert str(running.settings.state_dir) in up.stderr.replace("\n", "")
    status = _cli(other, "status", "--json", cwd=tmp_path, xdg=tmp_path / "xdg")
    assert status.returncode == 1
    held = {s["name"]: s["ports_held_by"] for s in json.loads(status.stdout)["services"]}
    assert f"state dir {running.settings.state_dir}" in held["seaweedfs"]
    assert f"state dir {running.settings.state_dir}" in held["tansu"]
    down = _cli(other, "down", cwd=tmp_path, xdg=tmp_path / "xdg")
    assert down.returncode == 0, down.stderr
    assert all(s.healthy for s in running.status())
    # SeaweedFS's /tmp gRPC sockets are keyed by port: the other state dir's `down` must
    # not remove the running platform's (its clean-up is for its own stopped instance).
    socket_file = Path(f"/tmp/seaweedfs-master-grpc-{running.settings.local_ports.seaweed_master + 10_000}.sock")
    assert socket_file.exists()


def test_port_holder_names_a_foreign_process(free_port: Callable[[], int]) -> None:
    import socket

    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        holder = port_holder(port)
    assert holder is not None
    assert holder.pid == os.getpid() and holder.state_dir is None
    assert "python" in holder.describe()
    assert port_holder(port) is None
