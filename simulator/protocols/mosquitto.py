"""Run a mosquitto broker as a child process on a given port (tests, laptops, the simulator).

Shared by the simulator's and the edge gateway's tests and by ``plantstream simulate-serve``
(a plant file may ask for a ``managed_broker``).  The broker gets its own config file and
persistence directory, listens on loopback only, and is started with
``PR_SET_PDEATHSIG`` so a killed parent never leaves it behind.  Persistence is on, so a
QoS-1 persistent session survives :meth:`MosquittoBroker.restart` (what the gateway's
"broker restarted" tests need).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from plantstream.services.process import set_parent_death_signal


def find_mosquitto() -> str:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if found is None:
        raise FileNotFoundError("mosquitto not found (apt-get install mosquitto)")
    return found


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class MosquittoBroker:
    """A private mosquitto on ``host:port`` with its data under ``data_dir``.

    Usable as a context manager.  ``start`` returns once the port accepts connections
    (or raises with the broker's log tail), ``stop`` terminates it and waits.
    """

    def __init__(self, port: int, data_dir: Path, host: str = "127.0.0.1", *, persistence: bool = True) -> None:
        self.host, self.port, self.data_dir, self.persistence = host, port, Path(data_dir), persistence
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "mosquitto.log"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "mosquitto.conf"
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Started as root, mosquitto drops to user "mosquitto", which cannot write our dirs.
            f"user {pwd.getpwuid(os.getuid()).pw_name}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 1",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
        ]
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        if self.running:
            return self
        config = self._write_config()
        self.process = subprocess.Popen(
            [find_mosquitto(), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=set_parent_death_signal,  # noqa: PLW1509 - only prctl, no locks taken
        )
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.stop()
                log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto did not start on {self.host}:{self.port}: {stderr}{log}")
            time.sleep(0.02)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stderr:
            process.stderr.close()

    def restart(self, timeout: float = 10.0) -> MosquittoBroker:
        self.stop(timeout)
        return self.start(timeout)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
