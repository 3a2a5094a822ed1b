"""A hot store subprocess for tests: start, wait on /ping with a deadline, stop, kill, restart.

Imported by ``conftest.py`` and by the tests (for type annotations); the module name is
unique across the test tree because test folders are not packages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from plantstream.observability.ports import COMPONENTS, PORT_SPAN
from plantstream.services.isolated import pick_free_port_block

USERNAME = "plantstream"
PASSWORD = "hotstore-test-secret"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class HotstoreProcess:
    """One hot store subprocess; can be stopped, killed and started again on the same data."""

    def __init__(self, data_dir: Path, state_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.state_dir = state_dir
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port = free_port()
        self.metrics_base_port = pick_free_port_block(PORT_SPAN)  # /metrics is on the metrics port
        self.username = USERNAME
        self.password = PASSWORD
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_base_port + COMPONENTS['hotstore'].offset}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLANTSTREAM_")}
        env.update(
            PLANTSTREAM_STATE_DIR=str(self.state_dir),
            PLANTSTREAM_HOTSTORE__USERNAME=USERNAME,
            PLANTSTREAM_HOTSTORE__PASSWORD=PASSWORD,
            PLANTSTREAM_METRICS__ENABLED="true",
            PLANTSTREAM_METRICS__BASE_PORT=str(self.metrics_base_port),
            TZ="Europe/Berlin",  # the service must force UTC itself
        )
        return env

    def start(self) -> None:
        cmd = [sys.executable, "-m", "plantstream.services.hotstore", "--data-dir", str(self.data_dir)]
        cmd += ["--host", self.host, "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env(), stdout=subprocess.PIPE, stderr=log)
        self.wait_ready()

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hot store exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                    if resp.read() == b"Ok.\n":
                        return
            except OSError:
                time.sleep(0.05)  # polling interval of a deadline-bound wait
        raise TimeoutError(f"hot store did not answer /ping within {START_TIMEOUT_S}s:\n{self.log_path.read_text()}")

    def ready_line(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.readline().decode()

    def stop(self) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took to exit)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        elapsed = time.monotonic() - started
        self._close_pipe()
        return code, elapsed

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._close_pipe()

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def client(self, **kwargs: object) -> Client:
        options: dict[str, object] = {"host": self.host, "port": self.port}
        options.update(username=self.username, password=self.password)
        options.update(kwargs)
        return clickhouse_connect.get_client(**options)
