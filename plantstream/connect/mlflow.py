"""MLflow clients, built from the settings only here.

Tracking and the registry are the same server (``mlflow.tracking_uri``).  Artifacts go
through the server's proxy (``mlflow-artifacts:``), so clients need no S3 credentials.
MLflow's fluent API (``mlflow.start_run``, ``mlflow.sklearn.log_model``) keeps its
tracking URI in process-global state: :func:`use_mlflow` sets it, at the time of use,
never at import.
"""

from __future__ import annotations

import os

from plantstream.settings import Settings

#: MLflow's own switches, set for every process that talks to the server through here: no
#: progress bars on stderr and no "View run at ..." line on stdout (``plantstream train
#: --json`` owns stdout).
_MLFLOW_QUIET = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def use_mlflow(settings: Settings) -> None:
    """Point MLflow's fluent API (runs, model logging and loading) at the settings' server."""
    import mlflow

    for name, value in _MLFLOW_QUIET.items():
        os.environ[name] = value
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_registry_uri(settings.mlflow.tracking_uri)


def mlflow_client(settings: Settings):  # -> mlflow.MlflowClient
    """A client for runs and the model registry of the settings' server."""
    from mlflow import MlflowClient

    use_mlflow(settings)
    return MlflowClient(tracking_uri=settings.mlflow.tracking_uri, registry_uri=settings.mlflow.tracking_uri)


def run_url(settings: Settings, experiment_id: str, run_id: str) -> str:
    return f"{settings.mlflow.tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def model_version_url(settings: Settings, name: str, version: str) -> str:
    return f"{settings.mlflow.tracking_uri.rstrip('/')}/#/models/{name}/versions/{version}"
