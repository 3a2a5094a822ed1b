"""The local platform supervisor: start, health-check, report on and stop the embedded services.

``LocalPlatform(settings)`` is the one Python API (the CLI, the demo and the test
fixtures all use it).  State lives under ``settings.state_dir``: data in
``<service>/``, logs in ``logs/<service>.log``, pid files in ``run/<service>.pid``.
Because the pid files are the source of truth (not an in-memory handle), a second
``up`` from another process sees the running services and leaves them alone, and
``down`` works from any process.

Start order is a dependency order: SeaweedFS (S3) first, because Tansu keeps its log
in a bucket and MLflow its artifacts; then Tansu, the hot store, MLflow; Dagster
(``with_dagster=True``: webserver and daemon, whose code location uses all of them);
monitoring (``with_monitoring=True``: the platform exporter, then Prometheus) last.
"""

from __future__ import annotations

import contextlib
import fcntl
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plantstream.services import (
    dagster_service,
    hotstore_service,
    mlflow_server,
    platform_exporter,
    prometheus,
    seaweedfs,
    tansu,
)
from plantstream.services.process import (
    PidRecord,
    WaitTimeoutError,
    dir_size_mb,
    listening_pids,
    port_open,
    process_cmdline,
    process_cwd,
    process_group,
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
#: The platform's Dagster (``platform up --with-dagster``): webserver + daemon, after what its assets use.
DAGSTER_SERVICES: tuple[str, ...] = ("dagster",)
#: Monitoring (``platform up --with-monitoring``), started after the platform it watches.
MONITORING_SERVICES: tuple[str, ...] = ("exporter", "prometheus")
#: Everything the supervisor can run, in start order.
KNOWN_SERVICES: tuple[str, ...] = ALL_SERVICES + DAGSTER_SERVICES + MONITORING_SERVICES

_SPEC_BUILDERS: dict[str, Callable[[Settings], ServiceSpec]] = {
    "seaweedfs": seaweedfs.spec,
    "tansu": tansu.spec,
    "hotstore": hotstore_service.spec,
    "mlflow": mlflow_server.spec,
    "dagster": dagster_service.spec,
    "exporter": platform_exporter.spec,
    "prometheus": prometheus.spec,
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
    # When not running but its ports are taken: who holds them (e.g. another state dir's platform).
    ports_held_by: str = ""


@dataclass(frozen=True)
class PortHolder:
    """Who listens on a port: another state dir's platform service, or some other process."""

    pid: int
    state_dir: Path | None  # set when the holder is a PlantStream platform's service
    service: str = ""
    command: str = ""

    def describe(self) -> str:
        if self.state_dir is not None:
            return f"the PlantStream platform with state dir {self.state_dir} (its {self.service}, pid {self.pid})"
        return f"pid {self.pid} ({self.command[:100] or 'command line not readable'})"


def port_holder(port: int) -> PortHolder | None:
    """Ask the process listening on ``port`` whose it is.

    A platform service runs in its own session with ``<state_dir>/<service>`` as its
    working directory, and that state dir's pid file names the service's process group:
    both must agree before a holder counts as a platform.  Asking the process, rather
    than keeping a registry of running platforms, leaves nothing to go stale after a
    ``kill -9`` or a reboot and needs no file outside the state dirs.  None if nothing
    visible to this user listens there.
    """
    for pid in listening_pids(port):
        group = process_group(pid)
        leader_cwd = process_cwd(group) if group else None
        for cwd in dict.fromkeys(c for c in (leader_cwd, process_cwd(pid)) if c is not None):
            record = read_pid_file(cwd.parent / "run" / f"{cwd.name}.pid")
            if record is not None and record.pid == group and record.service == cwd.name:
                return PortHolder(pid=record.pid, state_dir=cwd.parent, service=record.service)
        return PortHolder(pid=pid, state_dir=None, command=process_cmdline(pid))
    return None


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
        with_monitoring: bool = False,
        with_dagster: bool = False,
    ) -> None:
        if settings.profile is not Profile.LOCAL:
            raise ValueError("the local platform only runs with profile=local")
        default = (
            ALL_SERVICES + (DAGSTER_SERVICES if with_dagster else ()) + (MONITORING_SERVICES if with_monitoring else ())
        )
        chosen = default if services is None else tuple(services)
        unknown = set(chosen) - set(KNOWN_SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {KNOWN_SERVICES}")
        if set(chosen) & set(MONITORING_SERVICES) and not settings.metrics.enabled:
            # Monitoring without metrics would scrape nothing: the services this platform
            # starts (the hot store) serve theirs; other processes need the setting too.
            settings = settings.model_copy(update={"metrics": settings.metrics.model_copy(update={"enabled": True})})
        self.settings = settings
        self.services: tuple[str, ...] = tuple(s for s in KNOWN_SERVICES if s in chosen)
        self.die_with_parent = die_with_parent
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._specs: dict[str, ServiceSpec] = {}
        self._lock_depth = 0

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

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the state dir's supervisor lock (``run/supervisor.lock``) for one ``up``/``down``.

        Two ``up`` calls on one state dir at once could otherwise both find no pid file and
        both spawn a service: the loser's pid file would replace the winner's, and its
        clean-up would then remove the file of the one that runs.  Re-entrant within this
        object (a failed ``up`` calls ``down``); flock is released by the kernel if we die.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        path = self.settings.state_dir / "run" / "supervisor.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ports_held_by(self, name: str) -> str:
        """Who holds the ports of service ``name`` when they are taken, else ""."""
        spec = self.spec(name)
        for port in spec.all_ports():
            if port_open(spec.host, port, timeout=0.2):
                holder = port_holder(port)
                return holder.describe() if holder is not None else "a process this user cannot see"
        return ""

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
        with self._exclusive():
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
            raise PlatformError(name, self._busy_reason(spec, busy))
        if spec.cleanup is not None:
            spec.cleanup()
        for directory in spec.dirs:
            directory.mkdir(parents=True, exist_ok=True)
        if spec.prepare is not None:
            try:
                spec.prepare()
            except Exception as exc:
                notify(name, "failed")
                raise PlatformError(name, f"preparing the start failed: {exc}") from exc

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

    def _busy_reason(self, spec: ServiceSpec, busy: list[int]) -> str:
        """Why a service cannot start on ``busy`` ports, naming whoever holds them.

        A second platform must never start on top of a running one: with another state
        dir on the same ports it would split the user's data between two directories.
        """
        holder = port_holder(busy[0])
        who = holder.describe() if holder is not None else "a process this user cannot see"
        reason = f"port(s) {busy} on {spec.host} are in use by {who}, not by this state dir ({self.settings.state_dir})"
        if holder is None or holder.state_dir is None:
            return f"{reason}; stop it or choose other ports"
        other = holder.state_dir
        return (
            f"{reason}. To use that platform, run with PLANTSTREAM_STATE_DIR={other}; to start this one "
            f"instead, stop it first (PLANTSTREAM_STATE_DIR={other} plantstream platform down) or choose other ports"
        )

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
        # No state dir: nothing of it can run, and `down` must not create one.
        exclusive = self._exclusive() if self.settings.state_dir.is_dir() else contextlib.nullcontext()
        with exclusive:
            for name in reversed([s for s in KNOWN_SERVICES if s in chosen]):
                rec = self.record(name)
                path = pid_path(self.settings, name)
                spec = self.spec(name)
                if rec is None or not rec.leftover_members():
                    self._reap(name)
                    result[name] = "not running"
                else:
                    notify(name, "stopping")
                    clean = stop_group(rec, timeout=spec.stop_timeout, reap=lambda n=name: self._reap(n))
                    result[name] = "stopped" if clean else "killed"
                    self._busy_ports(spec, wait=5.0)  # so "down" returned means "ports free"
                    notify(name, "stopped")
                path.unlink(missing_ok=True)
                self._procs.pop(name, None)
                # Leftovers are keyed by port (SeaweedFS's /tmp sockets): while another state
                # dir's platform holds those ports they are its own, in use.
                if spec.cleanup is not None and not self._busy_ports(spec, wait=0.0):
                    spec.cleanup()
        return result

    # -- status --------------------------------------------------------------------------

    def status(self, *, probe: bool = True) -> list[ServiceStatus]:
        """Per service: running (pid alive), healthy (one probe), RSS and data size.

        Reads only: nothing is created (a status from a folder with no platform must not
        make one).  With ``probe``, a service that is not running but whose ports are taken
        says who holds them (``ports_held_by``), e.g. the platform of another state dir.
        """
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
                    ports_held_by="" if running or not probe else self.ports_held_by(name),
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
