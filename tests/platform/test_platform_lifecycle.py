"""The supervisor's life cycle on real processes: up, status, idempotent up, stale pid
files, failures part-way, down, the CLI and the foreground mode."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from plantstream.connect.s3 import s3_client
from plantstream.services.process import (
    PidRecord,
    group_members,
    process_start_ticks,
    read_pid_file,
    wait_until,
    write_pid_file,
)
from plantstream.services.spec import pid_path
from plantstream.services.supervisor import CORE_SERVICES, LocalPlatform, PlatformError, ensure_running
from plantstream.settings import Settings, child_env

pytestmark = pytest.mark.integration
S3_AND_KAFKA = ("seaweedfs", "tansu")


def test_up_status_down(make_platform: Callable[..., LocalPlatform]) -> None:
    platform = make_platform(CORE_SERVICES)
    report = platform.up()
    assert [s.name for s in report.services] == list(CORE_SERVICES)
    assert all(s.started and s.pid > 0 for s in report.services)
    statuses = platform.status()
    assert all(s.running and s.healthy for s in statuses), statuses
    assert all(s.rss_mb > 1 for s in statuses)
    assert all(pid_path(platform.settings, s.name).exists() for s in statuses)
    state = platform.settings.state_dir
    assert (state / "logs" / "seaweedfs.log").exists() and (state / "seaweedfs").is_dir()
    # buckets were created after S3 became healthy
    names = {b["Name"] for b in s3_client(platform.settings).list_buckets()["Buckets"]}
    settings = platform.settings
    assert {settings.lake.bucket, settings.kafka.broker_bucket, settings.mlflow.artifact_bucket} <= names

    pids = [s.pid for s in statuses if s.pid]
    result = platform.down()
    assert set(result.values()) == {"stopped"}, result  # all stopped on SIGTERM, none needed SIGKILL
    assert not any(group_members(p) for p in pids)
    assert not any(pid_path(settings, n).exists() for n in CORE_SERVICES)
    assert not any(s.running or s.healthy for s in platform.status())
    # SeaweedFS's hard-coded /tmp gRPC sockets of this instance are cleaned up
    grpc_port = settings.local_ports.seaweed_master + 10_000
    assert not Path(f"/tmp/seaweedfs-master-grpc-{grpc_port}.sock").exists()


def test_up_is_idempotent(make_platform: Callable[..., LocalPlatform]) -> None:
    platform = make_platform(S3_AND_KAFKA)
    first = platform.up()
    # a second supervisor object (as from another process) sees the running services
    again = LocalPlatform(platform.settings, services=S3_AND_KAFKA).up()
    assert [s.started for s in again.services] == [False, False]
    assert [s.pid for s in again.services] == [s.pid for s in first.services]


def test_stale_pid_files_are_replaced_and_reused_pids_left_alone(make_platform: Callable[..., LocalPlatform]) -> None:
    platform = make_platform(S3_AND_KAFKA)
    settings = platform.settings
    # A pid file naming a live process that is NOT the service (the pid was reused):
    # same pid, different start time.  `up` must neither trust nor signal it.
    me = os.getpid()
    ticks = process_start_ticks(me)
    assert ticks is not None
    fake = PidRecord(service="seaweedfs", pid=me, start_ticks=ticks - 1, started_at=0.0, argv0="weed")
    write_pid_file(pid_path(settings, "seaweedfs"), fake)
    # And a pid file naming no process at all.
    (pid_path(settings, "tansu")).write_text(
        '{"service": "tansu", "pid": 999999999, "start_ticks": 1, "started_at": 0, "argv0": "tansu"}'
    )
    assert not any(s.running for s in platform.status(probe=False))

    report = platform.up()
    assert all(s.started for s in report.services)
    assert all(s.healthy for s in platform.status())
    rec = read_pid_file(pid_path(settings, "seaweedfs"))
    assert rec is not None and rec.pid != me

    # A garbled pid file counts as stale too; the service it names keeps running, so
    # `up` cannot start a second one on the busy port and says so.
    tansu = read_pid_file(pid_path(settings, "tansu"))
    assert tansu is not None
    pid_path(settings, "tansu").write_text("not json")
    with pytest.raises(PlatformError, match=r"tansu: port"):
        platform.up()
    write_pid_file(pid_path(settings, "tansu"), tansu)  # so the fixture can stop it


def test_dead_service_is_restarted_alone(make_platform: Callable[..., LocalPlatform], kill9) -> None:
    platform = make_platform(S3_AND_KAFKA)
    first = {s.name: s.pid for s in platform.up().services}
    kill9(platform.settings, ("tansu",))
    status = {s.name: s for s in platform.status()}
    assert status["seaweedfs"].healthy and not status["tansu"].running
    second = {s.name: s for s in platform.up().services}
    assert not second["seaweedfs"].started and second["seaweedfs"].pid == first["seaweedfs"]
    assert second["tansu"].started and second["tansu"].pid != first["tansu"]


def test_s3_enforces_credentials(platform_settings: Settings) -> None:
    wrong = platform_settings.model_copy(
        update={"s3": platform_settings.s3.model_copy(update={"secret_access_key": SecretStr("wrong-secret")})}
    )
    with pytest.raises(ClientError):
        s3_client(wrong).list_buckets()
    s3_client(platform_settings).list_buckets()


def test_failure_part_way_stops_what_up_started_and_names_the_service(
    make_platform: Callable[..., LocalPlatform],
) -> None:
    platform = make_platform(S3_AND_KAFKA)
    host, port = platform.settings.kafka.bootstrap_servers.split(":")
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind((host, int(port)))
    blocker.listen()
    try:
        with pytest.raises(PlatformError) as info:
            platform.up()
    finally:
        blocker.close()
    assert info.value.service == "tansu"
    # SeaweedFS, started by this `up`, was stopped again
    assert not any(s.running for s in platform.status(probe=False))


def test_failure_report_carries_the_log_tail(make_platform: Callable[..., LocalPlatform]) -> None:
    # An unknown storage scheme makes Tansu exit at once: the report names it and shows why.
    platform = make_platform(("tansu",), kafka={"local_storage": "memory"})
    spec = platform.spec("tansu")
    spec.argv[spec.argv.index("--storage-engine") + 1] = "nosuch://x/"
    with pytest.raises(PlatformError) as info:
        platform.up()
    assert info.value.service == "tansu"
    assert "exited" in info.value.reason
    assert info.value.log_tail.strip()


def test_ensure_running_leaves_the_platform_as_it_found_it(make_platform: Callable[..., LocalPlatform]) -> None:
    platform = make_platform(S3_AND_KAFKA)
    settings = platform.settings
    with ensure_running(settings, services=S3_AND_KAFKA) as report:
        assert report.started == list(S3_AND_KAFKA)
        assert all(s.healthy for s in platform.status())
    assert not any(s.running for s in platform.status(probe=False))

    platform.up()  # already running: ensure_running must not stop it
    with ensure_running(settings, services=S3_AND_KAFKA) as report:
        assert report.started == []
    assert all(s.healthy for s in platform.status())


def _cli(settings: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    code = "from plantstream.cli.platform_cmd import platform_app; platform_app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cli_up_status_down(make_platform: Callable[..., LocalPlatform]) -> None:
    settings = make_platform().settings  # all four services
    up = _cli(settings, "up")
    assert up.returncode == 0, up.stderr
    status = _cli(settings, "status", "--json")
    assert status.returncode == 0, status.stderr
    payload = json.loads(status.stdout)
    assert payload["healthy"] is True
    assert [s["name"] for s in payload["services"]] == ["seaweedfs", "tansu", "hotstore", "mlflow"]
    # the services outlive the `up` command (they run in their own sessions)
    assert all(s["running"] for s in payload["services"])
    down = _cli(settings, "down")
    assert down.returncode == 0, down.stderr
    status = _cli(settings, "status", "--json")
    assert status.returncode == 1
    assert not any(s["running"] for s in json.loads(status.stdout)["services"])


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_foreground_supervisor_leaves_no_orphans(
    make_platform: Callable[..., LocalPlatform], how: signal.Signals
) -> None:
    platform = make_platform(CORE_SERVICES)
    settings = platform.settings
    code = (
        "from plantstream.services.supervisor import LocalPlatform, CORE_SERVICES;"
        "from plantstream.settings import load_settings;"
        "raise SystemExit(LocalPlatform(load_settings(), services=CORE_SERVICES, die_with_parent=True)"
        ".run_foreground())"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=child_env(settings), start_new_session=True)
    try:
        wait_until(platform.healthy, timeout=90, what="foreground platform healthy")
        pids = [s.pid for s in platform.status() if s.pid]
        assert len(pids) == len(CORE_SERVICES)
        t0 = time.monotonic()
        proc.send_signal(how)
        proc.wait(timeout=60)
        wait_until(lambda: not any(group_members(p) for p in pids), timeout=30, what="services gone")
        assert time.monotonic() - t0 < 30
        if how == signal.SIGTERM:
            assert proc.returncode == 0
            assert not any(pid_path(settings, n).exists() for n in CORE_SERVICES)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
