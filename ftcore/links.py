"""Addresses of the pages a user opens to follow a job between its two UIs: the MLflow run, model
version and artifact behind a Prefect flow run, and the Prefect flow run behind an MLflow run.

Only a tracking server (http / https) has pages; a local store (sqlite) has none, and the callers
fall back to naming the run id and the `mlflow ui` command.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from ftcore.tracking import is_server


def _base(tracking_uri: str) -> str | None:
    return tracking_uri.rstrip("/") if is_server(tracking_uri) else None


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The run's page in the MLflow UI."""
    base = _base(tracking_uri)
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def mlflow_model_version_url(tracking_uri: str, name: str, version: str | int) -> str | None:
    """The registered model version's page in the MLflow UI."""
    base = _base(tracking_uri)
    return f"{base}/#/models/{quote(name, safe='')}/versions/{version}" if base else None


def mlflow_artifact_url(tracking_uri: str, run_id: str, path: str) -> str | None:
    """A file the run logged, as the MLflow server serves it (an image shows inline)."""
    base = _base(tracking_uri)
    return f"{base}/get-artifact?{urlencode({'path': path, 'run_uuid': run_id})}" if base else None


def prefect_flow_run_url(ui_url: str | None, flow_run_id: str) -> str | None:
    """The flow run's page in the Prefect UI (ui_url: Prefect's PREFECT_UI_URL, e.g. http://host:4200)."""
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui_url else None
