"""Model registry stand-in: one ``mlflow server`` shared by every process.

Tracking and registry metadata live in SQLite under ``state_dir/mlflow`` (durable, one
writer process: this server); artifacts go to the MLflow bucket on SeaweedFS through the
server's artifact proxy (``--artifacts-destination s3://...``), so clients only need the
tracking URI, not S3 credentials.  In production the same client code talks to a real
MLflow server with a database backend.

``mlflow server`` runs uvicorn as a child process; both are in the service's process
group, which is what the supervisor signals.  Its background job runner (huey consumers
with temp dirs in /dev/shm) is switched off: the platform needs tracking and the
registry only, and a ``kill -9`` would leave those temp dirs behind.
"""

from __future__ import annotations

import sys
import urllib.request

from plantstream.connect.s3 import s3_env
from plantstream.services.spec import ServiceSpec, host_port, service_dir
from plantstream.settings import Settings, child_env

NAME = "mlflow"


def health(host: str, port: int, timeout: float = 2.0) -> bool:
    with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=timeout) as resp:
        return resp.status == 200


def spec(settings: Settings) -> ServiceSpec:
    host, port = host_port(settings.mlflow.tracking_uri, 5000)
    data = service_dir(settings, NAME)
    db = data / "mlflow.db"
    env = child_env(settings, **s3_env(settings))
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.pop("MLFLOW_TRACKING_URI", None)
    return ServiceSpec(
        name=NAME,
        argv=[
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--registry-store-uri",
            f"sqlite:///{db}",
            "--serve-artifacts",
            "--artifacts-destination",
            f"s3://{settings.mlflow.artifact_bucket}/",
            "--host",
            host,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        host=host,
        port=port,
        data_dir=data,
        healthy=lambda: health(host, port),
        start_timeout=120.0,  # the first start runs the SQLite schema migrations
        stop_timeout=15.0,
    )
