"""The local platform supervisor: start, health-check, report on and stop the embedded services.

``LocalPlatform(settings)`` is the one Python API (the CLI, the demo and the test
fixtures all use it).  State lives under ``settings.state_dir``: data in
``<service>/``, logs in ``logs/<service>.log``, pid files in ``run/<service>.pid``.
Because the pid files are the source of truth (not an in-memory handle), a second
``up`` from another process sees the running services and leaves them alone, and
``down`` works from any process.

Start order is a dependency order: SeaweedFS (S3) first, because Tansu keeps its log
in a bucket and MLflow its artifacts; then Tansu, the hot store, MLflow.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from plantstream.services import hotstore_service, mlflow_server, seaweedfs, tansu
from plantstream.services.process import (
    PidRecord,
    WaitTimeoutError,
    dir_size_mb,
    port_open,
    process_start_ticks,
    read_pid_file,
    rss_mb,
    spawn,
    stop_group,
    tail,
    wait_until,
    write_pid_file,
)
from plantstream.services.spec import ServiceSpec, log_path, pid_path
from plantstream.settings import Profile, Settings

#: Every service in start order.
ALL_SERVICES: tuple[str, ...] = ("seaweedfs", "tansu", "hotstore", "mlflow")
#: The services most tests need (MLflow is the slow one to start).
CORE_SERVICES: tuple[str, ...] = ("seaweedfs", "tansu", "hotstore")

_SPEC_BUILDERS: dict[str, Callable[[Settings], ServiceSpec]] = {
    "seaweedfs": seaweedfs.spec,
    "tansu": tansu.spec,
    "hotstore": hotstore_service.spec,
    "mlflow": mlflow_server.spec,
}

#: ``progress(service, phase)`` with phase in: starting, waiting, healthy, running, failed, stopping, stopped.
Progress = Callable[[str, str], None]


class PlatformError(RuntimeError):
    """A service could not be started; names it and carries the tail of its log."""

    def __init__(self, service: str, reason: str, log_tail: str = "") -> None:
        self.service = service
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"{service}: {reason}" + (f"\n--- last lines of its log ---\n{log_tail}" if log_tail else ""))


@dataclass(frozen=True)
class ServiceStart:
    """One line of an ``up`` report."""

    name: str
    pid: int
    port: int
    seconds_to_healthy: float
    started: bool  # False: it was already running and healthy, ``up`` left it alone


@dataclass(frozen=True)
class UpReport:
    services: list[ServiceStart]
    seconds: float

    @property
    def started(self) -> list[str]:
        return [s.name for s in self.services if s.started]

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "services": [asdict(s) for s in self.services]}


@dataclass(frozen=True)
class ServiceStatus:
    """One line of ``status``; ``rss_mb`` sums the service's whole process group."""

    name: str
    running: bool
    healthy: bool
    pid: int | None
    port: int
    rss_mb: float
    data_mb: float
    data_dir: str
    log: str
    extra_ports: dict[str, int] = field(default_factory=dict)


class LocalPlatform:
    """The embedded services of the ``local`` profile, supervised through pid files.

    ``die_with_parent=True`` makes the kernel SIGTERM each service when the thread that
    started it dies (``prctl(PR_SET_PDEATHSIG)``): right for foreground supervisors and
    test fixtures, wrong for ``platform up`` that returns while the services go on.
    Start and stop from the same (main) thread when using it.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        services: Sequence[str] | None = None,
        die_with_parent: bool = False,
    ) -> None:
        if settings.profile is not Profile.LOCAL:
            raise ValueError("the local platform only runs with profile=local")
        chosen = ALL_SERVICES if services is None else tuple(services)
        unknown = set(chosen) - set(ALL_SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {ALL_SERVICES}")
        self.settings = settings
        self.services: tuple[str, ...] = tuple(s for s in ALL_SERVICES if s in chosen)
        self.die_with_parent = die_with_parent
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._specs: dict[str, ServiceSpec] = {}

    # -- helpers -------------------------------------------------------------------------

    def spec(self, name: str) -> ServiceSpec:
        if name not in self._specs:
            self._specs[name] = _SPEC_BUILDERS[name](self.settings)
        return self._specs[name]

    def record(self, name: str) -> PidRecord | None:
        return read_pid_file(pid_path(self.settings, name))

    def log_file(self, name: str) -> str:
        return str(log_path(self.settings, name))

    def _reap(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None:
            proc.poll()

    def _probe(self, spec: ServiceSpec) -> bool:
        try:
            return bool(spec.healthy())
        except Exception:
            return False

    # -- up ------------------------------------------------------------------------------

    def up(self, *, progress: Progress | None = None) -> UpReport:
        """Start every service that is not running, in order, and wait until each is healthy.

        Idempotent: services that run (pid and start time match) are only health-checked.
        Stale pid files (after ``kill -9`` or a reboot) are replaced.  If a service fails,
        or the caller is interrupted (Ctrl-C), the services started by *this* call are
        stopped again and :class:`PlatformError` names the failing one with its log tail.
        """
        notify = progress or (lambda _service, _phase: None)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        done: list[ServiceStart] = []
        spawned: list[str] = []  # by this call, including one that then failed its health check
        try:
            for name in self.services:
                done.append(self._up_one(name, notify, spawned))
        except BaseException:
            with contextlib.suppress(Exception):
                self.down(services=spawned, progress=notify)
            raise
        return UpReport(services=done, seconds=time.monotonic() - t0)

    def _up_one(self, name: str, notify: Progress, spawned: list[str]) -> ServiceStart:
        spec = self.spec(name)
        rec = self.record(name)
        if rec is not None and rec.alive():
            notify(name, "waiting")
            try:
                seconds = wait_until(
                    lambda: self._probe(spec),
                    timeout=spec.start_timeout,
                    what=f"{name} health",
                    abort=lambda: None if rec.alive() else "process exited",
                )
            except WaitTimeoutError as exc:
                notify(name, "failed")
                raise PlatformError(
                    name, f"running (pid {rec.pid}) but not healthy: {exc}", tail(log_path(self.settings, name))
                ) from None
            self._after_healthy(spec)
            notify(name, "running")
            return ServiceStart(name, rec.pid, spec.port, seconds, started=False)

        if rec is not None:
            # Stale pid file: the leader is gone; stop leftovers of its group (e.g. an
            # MLflow uvicorn worker still holding the port) before starting afresh.
            stop_group(rec, timeout=spec.stop_timeout)
            pid_path(self.settings, name).unlink(missing_ok=True)
        busy = self._busy_ports(spec, wait=5.0)
        if busy:
            notify(name, "failed")
            raise PlatformError(
                name,
                f"port(s) {busy} on {spec.host} are in use by a process this state dir "
                f"({self.settings.state_dir}) did not start; stop it or choose other ports",
            )
        if spec.cleanup is not None:
            spec.cleanup()

        notify(name, "starting")
        t_start = time.monotonic()
        proc = spawn(
            spec.argv,
            env=spec.env,
            cwd=spec.data_dir,
            log_path=log_path(self.settings, name),
            die_with_parent=self.die_with_parent,
        )
        self._procs[name] = proc
        spawned.append(name)
        ticks = process_start_ticks(proc.pid)
        if ticks is None:  # exited before we could look at it
            proc.wait()
            notify(name, "failed")
            raise PlatformError(
                name, f"exited at once with code {proc.returncode}", tail(log_path(self.settings, name))
            )
        write_pid_file(
            pid_path(self.settings, name),
            PidRecord(service=name, pid=proc.pid, start_ticks=ticks, started_at=time.time(), argv0=spec.argv[0]),
        )
        notify(name, "waiting")

        def exited() -> str | None:
            code = proc.poll()
            return None if code is None else f"exited with code {code}"

        try:
            wait_until(lambda: self._probe(spec), timeout=spec.start_timeout, what=f"{name} health", abort=exited)
        except WaitTimeoutError as exc:
            notify(name, "failed")
            raise PlatformError(name, str(exc), tail(log_path(self.settings, name))) from None
        self._after_healthy(spec)
        seconds = time.monotonic() - t_start
        notify(name, "healthy")
        return ServiceStart(name, proc.pid, spec.port, seconds, started=True)

    def _busy_ports(self, spec: ServiceSpec, *, wait: float) -> list[int]:
        """Ports of ``spec`` that still accept connections after waiting up to ``wait`` s.

        A process that just exited can hold its sockets a moment longer: its leader is
        already a zombie while its other threads finish, and they share the descriptors.
        """

        def busy() -> list[int]:
            return [p for p in spec.all_ports() if port_open(spec.host, p, timeout=0.2)]

        with contextlib.suppress(WaitTimeoutError):
            wait_until(lambda: not busy(), timeout=wait, interval=0.1, what=f"{spec.name} ports free")
        return busy()

    def _after_healthy(self, spec: ServiceSpec) -> None:
        if spec.after_healthy is None:
            return
        try:
            # A just-healthy service may still refuse the first write for a moment.
            wait_until(lambda: spec.after_healthy() is None, timeout=30, what=f"{spec.name} set-up")  # type: ignore[misc]
        except WaitTimeoutError:
            try:
                spec.after_healthy()  # once more, to surface the real error
            except Exception as exc:
                raise PlatformError(
                    spec.name, f"set-up after start failed: {exc!r}", tail(log_path(self.settings, spec.name))
                ) from exc
            raise

    # -- down ----------------------------------------------------------------------------

    def down(self, *, services: Sequence[str] | None = None, progress: Progress | None = None) -> dict[str, str]:
        """Stop services in reverse start order: SIGTERM the group, then SIGKILL after a timeout.

        Returns per service ``stopped`` (clean), ``killed`` (needed SIGKILL) or ``not running``.
        Pid files are removed either way.
        """
        notify = progress or (lambda _service, _phase: None)
        chosen = self.services if services is None else tuple(services)
        result: dict[str, str] = {}
        for name in reversed([s for s in ALL_SERVICES if s in chosen]):
            rec = self.record(name)
            path = pid_path(self.settings, name)
            if rec is None or not rec.leftover_members():
                self._reap(name)
                result[name] = "not running"
            else:
                notify(name, "stopping")
                timeout = self.spec(name).stop_timeout if name in _SPEC_BUILDERS else 15.0
                clean = stop_group(rec, timeout=timeout, reap=lambda n=name: self._reap(n))
                result[name] = "stopped" if clean else "killed"
                self._busy_ports(self.spec(name), wait=5.0)  # so "down" returned means "ports free"
                notify(name, "stopped")
            path.unlink(missing_ok=True)
            self._procs.pop(name, None)
            spec = self.spec(name)
            if spec.cleanup is not None:
                spec.cleanup()
        return result

    # -- status --------------------------------------------------------------------------

    def status(self, *, probe: bool = True) -> list[ServiceStatus]:
        """Per service: running (pid alive), healthy (one probe), RSS and data size."""
        out = []
        for name in self.services:
            spec = self.spec(name)
            rec = self.record(name)
            running = rec is not None and rec.alive()
            members = rec.leftover_members() if rec is not None else []
            out.append(
                ServiceStatus(
                    name=name,
                    running=running,
                    healthy=running and probe and self._probe(spec),
                    pid=rec.pid if running and rec is not None else None,
                    port=spec.port,
                    rss_mb=round(rss_mb(members), 1),
                    data_mb=round(dir_size_mb(spec.data_dir), 2),
                    data_dir=str(spec.data_dir),
                    log=self.log_file(name),
                    extra_ports=dict(spec.extra_ports),
                )
            )
        return out

    def healthy(self) -> bool:
        return all(s.healthy for s in self.status())

    # -- foreground ----------------------------------------------------------------------

    def run_foreground(
        self, *, progress: Progress | None = None, on_exit: Callable[[str, int], None] | None = None
    ) -> int:
        """``up``, then stay attached until SIGINT/SIGTERM or a service dies; then ``down``.

        Returns 0 after a requested stop, 1 if a service exited on its own.
        """
        stop_reason: list[str] = []
        wake = threading.Event()

        def request_stop(signum: int, _frame: object) -> None:
            stop_reason.append(signal.Signals(signum).name)
            wake.set()

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.up(progress=progress)
            while not stop_reason:
                for name in self.services:
                    rec = self.record(name)
                    if rec is None or not rec.alive():
                        code = self._procs[name].poll() if name in self._procs else None
                        if on_exit is not None:
                            on_exit(name, -1 if code is None else code)
                        stop_reason.append(f"{name} exited")
                        break
                wake.wait(0.5)
            return 0 if stop_reason[0] in ("SIGINT", "SIGTERM") else 1
        finally:
            # Ignore further Ctrl-C while stopping: a half-done down leaves orphans.
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            try:
                self.down(progress=progress)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)


@contextlib.contextmanager
def ensure_running(
    settings: Settings,
    *,
    services: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Iterator[UpReport]:
    """Make sure the platform runs for the ``with`` block; leave it as it was found.

    Services that were already running stay running at exit; those this call started are
    stopped (also on exceptions).  Started services die with the calling thread if the
    process is killed, so no orphans.
    """
    platform = LocalPlatform(settings, services=services, die_with_parent=True)
    report = platform.up(progress=progress)
    try:
        yield report
    finally:
        platform.down(services=report.started)
