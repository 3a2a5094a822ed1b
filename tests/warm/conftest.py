"""Fixtures for the warm tier: a real PostgreSQL server, and settings for either backend.

``postgres_server`` runs Debian's PostgreSQL 15 (``initdb`` + ``postgres``, the
``postgresql`` package that ``scripts/bootstrap`` installs) once per session on a free
loopback port, with password authentication over TCP so the DSN is a real secret.
PostgreSQL refuses to run as root, so when the tests run as root (CI, the developers'
machines) the server runs as the ``postgres`` system user the package creates; its data
directory therefore lives in a directory of its own under the system temp dir (pytest's
temp dirs are private to root).  The server gets ``PR_SET_PDEATHSIG`` so a killed pytest
leaves no orphan, and the finalizer stops it (fast shutdown) and removes its data.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from plantstream.services.isolated import pick_free_port
from plantstream.services.process import WaitTimeoutError, set_parent_death_signal, tail, wait_until
from plantstream.settings import Settings, load_settings

PG_BIN = Path("/usr/lib/postgresql/15/bin")
BACKENDS = ("duckdb", "postgres")


@dataclass(frozen=True)
class PostgresServer:
    dsn: str  # of the ``warm`` database, with the password
    port: int
    data_dir: Path
    log_path: Path
    pid: int


def _server_user() -> tuple[str | None, int | None, int | None]:
    """(user, uid, gid) to run the server as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None, None, None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root needs the 'postgres' system user (apt-get install postgresql; scripts/bootstrap)")
    return entry.pw_name, entry.pw_uid, entry.pw_gid


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL 15 server private to this test session; ``dsn`` names its ``warm`` database."""
    for binary in ("initdb", "postgres"):
        if not (PG_BIN / binary).exists():
            pytest.fail(f"{PG_BIN / binary} is missing: install Debian's postgresql package (scripts/bootstrap does)")
    user, uid, gid = _server_user()
    base = Path(tempfile.mkdtemp(prefix="plantstream-warm-pg-"))
    data_dir, log_path, password_file = base / "data", base / "postgres.log", base / "password"
    password = secrets.token_hex(16)
    password_file.write_text(password + "\n")
    if uid is not None and gid is not None:
        for path in (base, password_file):
            os.chown(path, uid, gid)
    as_user = {"user": user, "group": gid, "extra_groups": []} if user else {}
    proc: subprocess.Popen[bytes] | None = None
    try:
        init = subprocess.run(
            [
                *(str(PG_BIN / "initdb"), "-D", str(data_dir), "-U", "plantstream", "--pwfile", str(password_file)),
                *("--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=base,
            **as_user,
        )
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}")
        port = pick_free_port()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    *(str(PG_BIN / "postgres"), "-D", str(data_dir), "-p", str(port)),
                    *("-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={base}"),
                    *("-c", "max_connections=100", "-c", "log_min_messages=warning"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=base,
                start_new_session=True,
                # Runs after user= switched (credential changes clear the parent-death signal).
                preexec_fn=set_parent_death_signal,  # noqa: PLW1509
                **as_user,
            )
        admin_dsn = f"postgresql://plantstream:{password}@127.0.0.1:{port}/postgres"

        def accepts_logins() -> bool:
            with psycopg.connect(admin_dsn, connect_timeout=2):
                return True

        def exited() -> str | None:
            if proc is not None and proc.poll() is not None:
                return f"postgres exited with {proc.returncode}:\n{tail(log_path)}"
            return None

        try:
            wait_until(accepts_logins, timeout=60, interval=0.05, what="postgres readiness", abort=exited)
        except WaitTimeoutError as exc:
            pytest.fail(f"{exc}\n{tail(log_path)}")
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE warm")
        yield PostgresServer(
            dsn=f"postgresql://plantstream:{password}@127.0.0.1:{port}/warm",
            port=port,
            data_dir=data_dir,
            log_path=log_path,
            pid=proc.pid,
        )
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, no waiting for clients
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if log_path.exists():  # kept beside pytest's other temp files for post-mortems
            with contextlib.suppress(OSError):
                shutil.copy(log_path, tmp_path_factory.mktemp("postgres-log") / "postgres.log")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def warm_settings_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Settings]:
    """``warm_settings_factory(backend, **warm_overrides)``: settings whose warm tier is a
    fresh DuckDB file of this test, or the session's PostgreSQL server."""

    def make(backend: str, **warm: object) -> Settings:
        values: dict[str, object] = {"backend": backend, **warm}
        if backend == "postgres":
            values.setdefault("postgres_dsn", request.getfixturevalue("postgres_server").dsn)
        return load_settings(state_dir=tmp_path / "state", warm=values)

    return make


@pytest.fixture(params=BACKENDS)
def warm_settings(request: pytest.FixtureRequest, warm_settings_factory: Callable[..., Settings]) -> Settings:
    """Settings for each backend in turn (the same test runs against both)."""
    return warm_settings_factory(request.param)
