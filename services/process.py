"""Child-process primitives for the local platform: spawn, pid files, liveness, stop.

Why not just ``Popen`` and a pid: after ``kill -9`` or a reboot a pid file can name a
pid the kernel has since given to an unrelated process.  Every pid file therefore also
records the process *start time* (``/proc/<pid>/stat`` field 22, clock ticks since
boot); a pid only counts as ours when both match.  Services run in their own session
(``start_new_session=True``), so their process group id equals their pid and stopping
the group also stops helpers they spawned (MLflow starts a uvicorn child).

Linux only (``/proc`` and ``prctl``), like the rest of the local platform.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class WaitTimeoutError(TimeoutError):
    """A polled condition did not become true in time."""


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
    abort: Callable[[], str | None] | None = None,
) -> float:
    """Poll ``condition`` until it is true; return the seconds it took.

    ``abort`` is asked between polls and may return a reason to give up early (e.g. the
    process being waited for has exited: no point waiting out the whole timeout).
    Exceptions raised by ``condition`` count as "not yet" (a service refusing
    connections while it boots is the normal case).
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        with contextlib.suppress(Exception):
            if condition():
                return time.monotonic() - start
        if abort is not None:
            reason = abort()
            if reason:
                raise WaitTimeoutError(f"{what}: {reason}")
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"{what}: not true after {timeout:.0f} s")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------
# /proc helpers


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (which may contain spaces)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) state ppid pgrp session ..." : split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def process_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, started at ``start_ticks``."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_ticks is None or int(fields[19]) == start_ticks


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def rss_mb(pids: Iterable[int]) -> float:
    """Resident memory of the given processes together, in MiB."""
    total = 0
    for pid in pids:
        try:
            resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        total += resident * _PAGE_SIZE
    return total / (1024 * 1024)


def dir_size_mb(path: Path) -> float:
    """Bytes on disk under ``path`` (apparent sizes), in MiB; 0 if it does not exist."""
    total = 0
    if not path.exists():
        return 0.0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total / (1024 * 1024)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening_pids(port: int) -> list[int]:
    """Processes holding a listening TCP socket on ``port`` (any local address, v4 or v6).

    From ``/proc/net/tcp{,6}`` (socket inode of each LISTEN entry) and the ``/proc/<pid>/fd``
    links to those inodes; processes of other users are invisible unless we are root.
    """
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in wanted:
                        pids.append(int(entry.name))
                        break
    return sorted(pids)


def process_cwd(pid: int) -> Path | None:
    """The working directory of ``pid`` (None if gone or not ours to read)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def process_cmdline(pid: int) -> str:
    """The command line of ``pid`` as one string ("" if gone or unreadable)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def process_group(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


# ---------------------------------------------------------------------------------------
# pid files


@dataclass(frozen=True)
class PidRecord:
    """What a pid file holds: enough to recognise the process (and its group) later."""

    service: str
    pid: int
    start_ticks: int
    started_at: float  # wall clock, for humans
    argv0: str

    def alive(self) -> bool:
        return process_alive(self.pid, self.start_ticks)

    def leftover_members(self) -> list[int]:
        """Processes of this service's group, also when its leader is already gone.

        A process group id cannot be handed out as a new pid while any member of the group
        lives, so members of group ``pid`` are ours unless the leader pid now belongs to a
        different (newer) process: then our group had died out completely and nothing is ours.
        """
        ticks = process_start_ticks(self.pid)
        if ticks is not None and ticks != self.start_ticks:
            return []
        return group_members(self.pid)


def write_pid_file(path: Path, record: PidRecord) -> None:
    """Write atomically (rename) so a reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    tmp.replace(path)


def read_pid_file(path: Path) -> PidRecord | None:
    """The record, or None if the file is missing or unreadable (treated as stale)."""
    try:
        return PidRecord(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


# ---------------------------------------------------------------------------------------
# spawn and stop


def set_parent_death_signal() -> None:
    """preexec_fn: have the kernel SIGTERM this child when its parent thread dies.

    Used by foreground supervisors (``platform up --foreground``, test fixtures): even a
    SIGKILLed supervisor leaves no orphans.  Services then stop the helpers they spawned
    themselves on SIGTERM.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log_path: Path,
    die_with_parent: bool,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session, stdout and stderr appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== start {time.strftime('%Y-%m-%dT%H:%M:%S')} {argv[0]}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=set_parent_death_signal if die_with_parent else None,  # noqa: PLW1509
            close_fds=True,
        )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(record: PidRecord, *, timeout: float, reap: Callable[[], None] | None = None) -> bool:
    """SIGTERM the service's process group, wait up to ``timeout``, then SIGKILL what is left.

    Returns True if it stopped on SIGTERM alone.  ``reap`` lets the owner of a ``Popen``
    collect its zombie (a zombie leader still counts as a group member for ``killpg``).
    """
    if not record.leftover_members():
        return True
    _signal_group(record.pid, signal.SIGTERM)

    def gone() -> bool:
        if reap is not None:
            reap()
        return not record.leftover_members()

    try:
        wait_until(gone, timeout=timeout, interval=0.05, what=f"{record.service} stop")
        return True
    except WaitTimeoutError:
        _signal_group(record.pid, signal.SIGKILL)
        with contextlib.suppress(WaitTimeoutError):
            wait_until(gone, timeout=5, interval=0.05, what=f"{record.service} kill")
        return False


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file (for failure reports)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])
