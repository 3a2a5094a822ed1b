"""The platform's Dagster: webserver + daemon on a persistent instance under the state dir.

``plantstream platform up --with-dagster`` starts it like every other service (own
session, pid file, log, health check).  It runs ``dagster dev`` on the project's code
location: one command that starts the webserver, the daemon (schedules, sensors,
backfills, the run queue) and one code server both share, in the service's process
group, so ``down`` stops all of them.  Why ``dagster dev`` rather than a webserver and
a daemon as two services: each would start its own code server (two more Python
processes loading the definitions, ~250 MB each), and the supervisor stops a process
group as a whole either way.  Production runs the webserver, the daemon and a code
server as separate deployments (Dagster's Helm chart); nothing here is used there.

``DAGSTER_HOME`` is ``<state_dir>/dagster``, with a ``dagster.yaml`` (written before each
start from :func:`instance_yaml`) that keeps runs, event logs, schedules and sensor
cursors in SQLite under ``<state_dir>/dagster/storage``: they survive ``down``/``up``
and ``kill -9``, unlike ``dagster dev``'s default temporary instance.  The instance
queues runs (at most :data:`MAX_CONCURRENT_RUNS` at once: the machine has few cores and
concurrent Delta writers to one table only retry each other's commits), limits every
concurrency pool to one step at a time (the hot-store archival runs alone), monitors
runs whose process died, and sends no telemetry.

Healthy means: the webserver answers, the code location loaded without error, and
every daemon reports a recent heartbeat (without the daemon, schedules and sensors do
not run and launched runs stay queued).  Settings reach the code location as
``PLANTSTREAM_*`` variables, so it talks to this platform's S3, Kafka and hot store.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

from plantstream.services.spec import ServiceSpec, service_dir
from plantstream.settings import Settings, child_env

NAME = "dagster"
HOST = "127.0.0.1"
LOCATION = "plantstream"
DEFINITIONS_MODULE = "plantstream.orchestration.definitions"
MAX_CONCURRENT_RUNS = 2

HEALTH_QUERY = """{
  workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}"""


def dagster_home(settings: Settings) -> Path:
    return service_dir(settings, NAME)


def webserver_url(settings: Settings) -> str:
    return f"http://{HOST}:{settings.local_ports.dagster_webserver}"


def instance_yaml(home: Path) -> str:
    """The instance configuration: persistent SQLite storage under ``home`` (see the module docstring)."""
    return f"""# Written by plantstream (services/dagster_service.py) before every start: edit that, not this file.
storage:
  sqlite:
    base_dir: {home / "storage"}
local_artifact_storage:
  module: dagster.core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {home}
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
concurrency:
  runs:
    max_concurrent_runs: {MAX_CONCURRENT_RUNS}
  pools:
    default_limit: 1
retention:
  schedule:
    purge_after_days: 30
  sensor:
    purge_after_days:
      skipped: 7
      failure: 30
      success: -1
telemetry:
  enabled: false
"""


def workspace_yaml() -> str:
    return f"""# Written by plantstream (services/dagster_service.py) before every start.
load_from:
  - python_module:
      module_name: {DEFINITIONS_MODULE}
      attribute: defs
      location_name: {LOCATION}
"""


def write_instance_files(settings: Settings) -> Path:
    """Write ``dagster.yaml`` and ``workspace.yaml`` into DAGSTER_HOME; returns the workspace file."""
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml(home))
    workspace = home / "workspace.yaml"
    workspace.write_text(workspace_yaml())
    return workspace


def graphql(port: int, query: str, *, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(
        f"http://{HOST}:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def health_problems(answer: dict) -> list[str]:
    """What keeps the Dagster service from being healthy, from the answer to :data:`HEALTH_QUERY`."""
    data = answer.get("data") or {}
    problems = []
    workspace = data.get("workspaceOrError") or {}
    entries = workspace.get("locationEntries") or []
    if not entries:
        problems.append("no code location loaded yet")
    for entry in entries:
        loaded = entry.get("locationOrLoadError") or {}
        if entry.get("loadStatus") != "LOADED":
            problems.append(f"code location {entry.get('name')} is {entry.get('loadStatus')}")
        elif loaded.get("__typename") != "RepositoryLocation":
            problems.append(f"code location {entry.get('name')} failed to load: {loaded.get('message', '')[:300]}")
    daemons = (((data.get("instance") or {}).get("daemonHealth") or {}).get("allDaemonStatuses")) or []
    if not daemons:
        problems.append("no daemon status yet")
    problems += [f"daemon {d['daemonType']} not healthy" for d in daemons if d.get("required") and not d.get("healthy")]
    return problems


def healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://{HOST}:{port}/server_info", timeout=2.0) as response:
        if response.status != 200:
            return False
    return not health_problems(graphql(port, HEALTH_QUERY))


def spec(settings: Settings) -> ServiceSpec:
    port = settings.local_ports.dagster_webserver
    home = dagster_home(settings)
    env = child_env(settings, DAGSTER_HOME=str(home))
    return ServiceSpec(
        name=NAME,
        argv=[
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            str(home / "workspace.yaml"),
            "-h",
            HOST,
            "-p",
            str(port),
        ],
        env=env,
        host=HOST,
        port=port,
        data_dir=home,
        healthy=lambda: healthy(port),
        start_timeout=180.0,  # the code location imports the whole stack; the daemon's first heartbeats follow
        stop_timeout=30.0,
        prepare=lambda: write_instance_files(settings),
    )
