"""A job that fails mid-way says where and why (MLflow tags, a Prefect artifact), and running it again
resumes at the failed step: what finished comes from the cache.

The failure is real: the evaluate step benchmarks against an OpenAI endpoint where nothing listens
yet; the retry starts `ft serve` there first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.finetune import finetune
from ftcore import tracking
from ftcore.builtin import ensure_builtin
from ftcore.failures import ERROR_TAG, FAILED_STEP_TAG
from tests.helpers import free_port, small_config, stop_group
from tests.test_serve import _start_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_local")]


def _artifact(key: str) -> str | None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )

    found = run_coro_as_sync(read())
    return found[0].data if found else None


def test_failed_step_is_recorded_and_a_retry_resumes_there(tmp_path: Path) -> None:
    port = free_port()
    cfg = small_config(
        tmp_path / "job",
        eval={"tasks": ["ftflow_mc"], "benchmark_limit": 2, "endpoint": f"http://127.0.0.1:{port}/v1"},
    )
    with pytest.raises(Exception, match=r"eval\.endpoint"):
        finetune(cfg)

    client = tracking.get_client(tracking.resolve_tracking_uri(None, cfg.workdir_path))
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.registry.experiment).experiment_id],
        filter_string="tags.`ftflow.job` = 'test-job'",
    )
    tagged = [r for r in runs if FAILED_STEP_TAG in r.data.tags]
    assert len(tagged) == 1 and tagged[0].data.tags[FAILED_STEP_TAG] == "evaluate"
    assert "eval.endpoint" in tagged[0].data.tags[ERROR_TAG]
    assert tagged[0].data.tags["prefect.flow_run_id"]
    report = _artifact("test-job-failure")
    assert report is not None and "failed at step `evaluate`" in report

    server, _ = _start_server([str(ensure_builtin("tiny-qwen2"))], tmp_path / "serve.log", port=port)
    try:
        done = finetune(cfg)
    finally:
        stop_group(server)
    states = {row["step"]: row["state"] for row in done["summary"]}
    assert states["train"] == "Cached" and states["preprocess"] == "Cached"
    assert states["evaluate"] == "Completed" and states["register"] == "Completed"
    metrics = done["artifacts"]["eval"]["metadata"]["metrics"]
    assert 0.0 <= metrics["served/ftflow_mc_acc"] <= 1.0
    # observability: the job's MLflow run names the flow run that finished it, whose task runs carry
    # the job's tags
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    run_id = done["artifacts"]["trained"]["metadata"]["mlflow_run_id"]
    flow_run_id = client.get_run(run_id).data.tags["prefect.flow_run_id"]
    assert flow_run_id != tagged[0].data.tags["prefect.flow_run_id"]  # the retry's, not the failed one's
    assert FAILED_STEP_TAG not in client.get_run(run_id).data.tags  # the retry finished: cleared
    with get_client(sync_client=True) as prefect:
        task_runs = prefect.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    assert task_runs and all({"job:test-job", "stage:sft"} <= set(t.tags) for t in task_runs)
