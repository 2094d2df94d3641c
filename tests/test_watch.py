"""Event triggers: the watcher deployment starts the job's deployment when its data files change or
its registry alias moves, and not otherwise (a real Prefect server, a real sqlite registry)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.deploy import deploy
from flows.watch import watch
from ftcore import tracking
from tests.helpers import REPO, small_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_local")]


def _deployment(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def _runs_of(deployment_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )


def test_watcher_starts_the_job_when_data_or_alias_moves(tmp_path: Path) -> None:
    data = shutil.copytree(REPO / "data", tmp_path / "data")
    cfg = small_config(tmp_path / "job", data={"dataset_dir": str(data)}, registry={"model_name": "watched"})
    deployed = deploy(cfg, name="job", on_data_change=True, on_alias="champion", poll_s=3600)
    assert deployed.name == "finetune/job" and deployed.watcher
    job = _deployment("finetune/job")
    params = _deployment("watch/job-watch").parameters
    assert params["deployment"] == "finetune/job" and params["data"] and params["alias"] == "champion"

    first = watch(**params)
    assert first["reasons"] == [] and first["flow_run_id"] is None  # a baseline, nothing started
    assert watch(**params)["flow_run_id"] is None and _runs_of(job.id) == []

    rows = json.loads((data / "demo_alpaca.json").read_text())
    (data / "demo_alpaca.json").write_text(json.dumps([*rows, rows[0]], ensure_ascii=False))
    changed = watch(**params)
    assert changed["reasons"] == ["the train data changed"]
    runs = _runs_of(job.id)
    assert [str(r.id) for r in runs] == [changed["flow_run_id"]]

    client = tracking.get_client(tracking.resolve_tracking_uri(None, cfg.workdir_path))
    client.create_registered_model("watched")
    version = client.create_model_version("watched", source=str(data), run_id=None)
    client.set_registered_model_alias("watched", "champion", version.version)
    moved = watch(**params)
    assert moved["reasons"] == ["models:/watched@champion moved from version None to 1"]
    assert len(_runs_of(job.id)) == 2
    assert watch(**params)["flow_run_id"] is None and len(_runs_of(job.id)) == 2
