"""``plantstream platform up|down|status``: the embedded local services.

A thin shell over :class:`plantstream.services.supervisor.LocalPlatform`; everything
that matters (pid files, health checks, clean stops) lives there so the tests exercise
the same code.  Exit codes: 0 healthy/done, 1 a service failed or is unhealthy,
2 bad settings.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.console import Console
from rich.table import Table

from plantstream.cli.common import err_console, settings_or_exit

platform_app = typer.Typer(
    name="platform",
    help="Start, check and stop the local services (S3, Kafka, hot store, MLflow) under the state dir.",
    no_args_is_help=True,
)

_PHASE_TEXT = {
    "starting": "starting",
    "waiting": "waiting until healthy",
    "healthy": "[green]healthy[/green]",
    "running": "[green]already running[/green]",
    "failed": "[red]failed[/red]",
    "stopping": "stopping",
    "stopped": "stopped",
}


def _progress(console: Console, last: str | None = None):  # -> (progress callback, rich status spinner)
    """Spinner text per phase; finished phases printed as lines.  ``last``: the final service of ``up``."""
    status = console.status("")

    def notify(service: str, phase: str) -> None:
        text = _PHASE_TEXT.get(phase, phase)
        if phase in ("healthy", "running", "failed", "stopped"):
            console.print(f"  {service:<10} {text}")
            if service == last and phase in ("healthy", "running"):
                status.update("platform running; Ctrl-C or SIGTERM stops it")
        else:
            status.update(f"{service}: {text}")

    return notify, status


@platform_app.command("up")
def up(
    foreground: bool = typer.Option(
        False, "--foreground", help="Stay attached; Ctrl-C or SIGTERM stops every service."
    ),
    with_monitoring: bool = typer.Option(
        False,
        "--with-monitoring",
        help="Also start the platform exporter and Prometheus (docs/observability.md).",
    ),
    with_dagster: bool = typer.Option(
        False,
        "--with-dagster",
        help="Also start Dagster: webserver + daemon, so schedules and sensors run (docs/cold-tier.md).",
    ),
) -> None:
    """Start every service that is not running and wait until all are healthy."""
    from plantstream.observability.ports import metrics_port
    from plantstream.services.supervisor import LocalPlatform, PlatformError

    settings = settings_or_exit()
    console = Console(stderr=True)
    platform = LocalPlatform(
        settings, die_with_parent=foreground, with_monitoring=with_monitoring, with_dagster=with_dagster
    )
    if with_dagster:
        from plantstream.services.dagster_service import webserver_url

        console.print(f"Dagster UI on {webserver_url(settings)}")
    if with_monitoring:
        console.print(f"Prometheus on http://127.0.0.1:{metrics_port(settings, 'prometheus')}")
        if not settings.metrics.enabled:
            console.print(
                "[yellow]PLANTSTREAM_METRICS__ENABLED is not set: the platform's services serve metrics, "
                "but set it for gateways and dataflows too, or Prometheus finds them down[/yellow]"
            )
    notify, status = _progress(console, last=platform.services[-1] if foreground else None)
    console.print(f"platform state dir: {settings.state_dir}")
    try:
        if foreground:

            def died(service: str, code: int) -> None:
                console.print(f"[red]{service} exited (code {code}); stopping the platform[/red]")

            with status:
                code = platform.run_foreground(progress=notify, on_exit=died)
            raise typer.Exit(code)
        with status:
            report = platform.up(progress=notify)
    except PlatformError as exc:
        err_console.print(f"[red]platform up failed in {exc.service}: {exc.reason}[/red]")
        if exc.log_tail:
            err_console.print(
                f"--- last lines of {platform.log_file(exc.service)} ---\n{exc.log_tail}", markup=False, soft_wrap=True
            )
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted: stopped what this command had started[/yellow]")
        raise typer.Exit(130) from None
    table = Table("service", "pid", "port", "seconds to healthy", "started now")
    for s in report.services:
        table.add_row(s.name, str(s.pid), str(s.port), f"{s.seconds_to_healthy:.2f}", "yes" if s.started else "no")
    console.print(table)
    console.print(f"all healthy in {report.seconds:.1f} s; logs in {settings.logs_dir}")


@platform_app.command("down")
def down() -> None:
    """Stop every service (SIGTERM, then SIGKILL after a timeout); data stays."""
    from plantstream.services.supervisor import LocalPlatform

    settings = settings_or_exit()
    console = Console(stderr=True)
    notify, status = _progress(console)
    with status:
        result = LocalPlatform(settings, with_monitoring=True, with_dagster=True).down(progress=notify)
    for name, outcome in result.items():
        console.print(f"  {name:<10} {outcome}")


@platform_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout.")) -> None:
    """Show each service: running, healthy, pid, port, memory, data size.  Exit 1 if any is unhealthy.

    Read-only: it creates no state dir.  A service that is not running here but whose
    ports are taken is shown with who holds them (another state dir's platform, say).
    """
    from plantstream.services.spec import pid_path
    from plantstream.services.supervisor import ALL_SERVICES, DAGSTER_SERVICES, MONITORING_SERVICES, LocalPlatform

    settings = settings_or_exit()
    # Dagster and monitoring are listed when this state dir runs (or ran) them.
    optional = DAGSTER_SERVICES + MONITORING_SERVICES
    shown = ALL_SERVICES + tuple(s for s in optional if pid_path(settings, s).exists())
    statuses = LocalPlatform(settings, services=shown).status()
    healthy = all(s.healthy for s in statuses)
    if as_json:
        payload = {"healthy": healthy, "state_dir": str(settings.state_dir), "services": [asdict(s) for s in statuses]}
        typer.echo(json.dumps(payload, sort_keys=True))
    else:
        table = Table("service", "running", "healthy", "pid", "port", "RSS MB", "data MB", "log")
        for s in statuses:
            table.add_row(
                s.name,
                "yes" if s.running else "[red]no[/red]",
                "[green]yes[/green]" if s.healthy else "[red]no[/red]",
                str(s.pid or "-"),
                str(s.port),
                f"{s.rss_mb:.0f}",
                f"{s.data_mb:.1f}",
                s.log,
            )
        console = Console()
        console.print(f"platform state dir: {settings.state_dir}")
        console.print(table)
        for s in statuses:
            if s.ports_held_by:
                console.print(f"{s.name}: its ports are held by {s.ports_held_by}", style="yellow", markup=False)
    raise typer.Exit(0 if healthy else 1)
