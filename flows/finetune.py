"""The finetune flow: the steps of ftcore's step table (fetch ... register), each a Prefect task.

Call it from Python with a PipelineConfig, a dict or a YAML path (`finetune("cfg.yaml")`), from the
CLI (`ft run cfg.yaml key=value ...`) or from a Prefect deployment; the Prefect UI shows the config
as a form because the parameter is the typed PipelineConfig.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import flow, get_run_logger

from ftcore.artifacts import Artifact
from ftcore.config import PipelineConfig, load_config
from ftcore.links import prefect_flow_run_url
from ftcore.steps import Step, plan, preflight, run_steps
from tasks import TASKS
from tasks.common import artifact_key


def _submit(summary: list[dict[str, Any]]) -> Any:
    """Run a step as its Prefect task; a cached result whose files (or version) are gone runs afresh."""

    def execute(step: Step, cfg: PipelineConfig, args: list[Artifact | None]) -> Artifact:
        start = time.monotonic()
        task = TASKS[step.name]
        state = task(cfg, *args, return_state=True)
        try:
            artifact = state.result()
        except Exception as exc:
            _report_failure(cfg, step.name, exc)
            raise
        if state.name == "Cached" and not step.present(cfg, artifact):
            get_run_logger().warning(
                "%s: cached artifact %s is gone, running again", step.name, artifact.path
            )
            state = task.with_options(refresh_cache=True)(cfg, *args, return_state=True)
            artifact = state.result()
        summary.append(
            {
                "step": step.name,
                "state": state.name,
                "seconds": round(time.monotonic() - start, 1),
                "path": artifact.path,
            }
        )
        return artifact

    return execute


def _record_crash(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect's on_crashed hook (the flow's process was interrupted or killed): the step that was
    running and the crash go where a failed step's error goes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    from ftcore.failures import record_failure

    try:
        cfg = load_config(flow_run.parameters["config"], flow_run.parameters.get("overrides"))
        with get_client(sync_client=True) as client:
            running = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(
                        type=TaskRunFilterStateType(any_=[StateType.RUNNING, StateType.CRASHED])
                    )
                ),
            )
        step = ",".join(sorted({t.name.rsplit("-", 1)[0] for t in running})) or "finetune"
        record_failure(cfg, step, f"crashed: {state.message or state.name}", flow_run_tags(flow_run))
    except Exception as exc:  # a hook must never raise over the crash it reports
        logging.getLogger("flows.finetune").warning("could not record the crash: %s", exc)


@flow(
    name="finetune",
    validate_parameters=False,
    persist_result=True,
    result_serializer="json",
    on_crashed=[_record_crash],
)
def finetune(config: PipelineConfig | dict | str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Fine-tune, evaluate, merge and register one model; returns each step's artifact manifest."""
    cfg = load_config(config, overrides)
    logger = get_run_logger()
    logger.info("job %s in %s", cfg.name, cfg.workdir_path)
    preflight(cfg)  # bad names, files, rows and model refs fail here, before any task runs

    from prefect import tags

    summary: list[dict[str, Any]] = []
    with tags(*job_tags(cfg)):  # every task run carries the job, objective and model
        out = run_steps(cfg, plan(cfg), _submit(summary))
    _link_mlflow_run(cfg, out)
    for row in summary:
        logger.info("%-14s %-10s %7.1fs  %s", row["step"], row["state"], row["seconds"], row["path"])
    _publish_summary(cfg, summary, out)
    return {"summary": summary, "artifacts": {name: a.model_dump() for name, a in out.items()}}


def job_tags(cfg: PipelineConfig) -> list[str]:
    """The tags of a job's flow and task runs (and deployments): filter the Prefect UI by them."""
    return ["ftflow", f"job:{cfg.name}", f"stage:{cfg.train.stage}", f"model:{cfg.model.name_or_path}"]


def _mlflow_run_id(out: dict[str, Artifact]) -> str | None:
    """The job's MLflow run (training's, or evaluation's when the adapter was given)."""
    return next((a.metadata["mlflow_run_id"] for a in out.values() if a.metadata.get("mlflow_run_id")), None)


def _link_mlflow_run(cfg: PipelineConfig, out: dict[str, Artifact]) -> None:
    """The job's MLflow run names the Prefect flow run that made it (the summary artifact names the
    run and the model version back)."""
    from prefect.context import get_run_context

    from ftcore.failures import clear_failure
    from ftcore.steps.common import JobRun

    run_id = _mlflow_run_id(out)
    flow_run = get_run_context().flow_run
    if run_id and flow_run is not None:
        JobRun(cfg, run_id).tag(flow_run_tags(flow_run))
    if run_id:  # this run finished: failure tags of an earlier attempt go
        clear_failure(cfg, run_id)


def _report_failure(cfg: PipelineConfig, step: str, error: BaseException) -> None:
    """The failed step and its error in the job's MLflow run and as a Prefect artifact (then it raises)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.context import get_run_context

    from ftcore.failures import record_failure

    flow_run = get_run_context().flow_run
    failure = record_failure(cfg, step, error, flow_run_tags(flow_run) if flow_run else {})
    get_run_logger().error("step %s failed: %s", step, failure.error)
    key = artifact_key(cfg.name, "failure")
    create_markdown_artifact(
        markdown=failure.markdown(cfg.name), key=key, description=f"{cfg.name}: {step} failed"
    )


def flow_run_tags(flow_run: Any) -> dict[str, str]:
    """MLflow tags that lead from a run back to the Prefect flow run that made it (its page too, when
    Prefect knows its UI's address)."""
    from prefect.settings import get_current_settings

    tags = {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_name": flow_run.name}
    url = prefect_flow_run_url(get_current_settings().ui_url, str(flow_run.id))
    if url:
        tags["prefect.flow_run_url"] = url
    return tags


def _publish_summary(cfg: PipelineConfig, summary: list[dict[str, Any]], out: dict[str, Artifact]) -> None:
    """A markdown artifact in the Prefect UI: what each step did and what the fine-tune achieved, with
    links to the MLflow run and model version (link artifacts too, when MLflow is a server)."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    lines = ["| step | state | seconds | artifact |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['state']} | {r['seconds']} | `{r['path']}` |" for r in summary]
    links = mlflow_links(cfg, out)
    for label, (text, url) in links.items():
        lines += ["", f"{label}: [{text}]({url})" if url else f"{label}: `{text}`"]
        if url:
            create_link_artifact(
                url, link_text=text, key=artifact_key(cfg.name, label), description=f"{label} of {cfg.name}"
            )
    metrics = out["eval"].metadata.get("metrics", {}) if "eval" in out else {}
    if metrics:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items())]
    key = artifact_key(cfg.name, "summary")
    create_markdown_artifact(markdown="\n".join(lines), key=key, description=f"ftflow job {cfg.name}")


def mlflow_links(cfg: PipelineConfig, out: dict[str, Artifact]) -> dict[str, tuple[str, str | None]]:
    """{label: (text, url or None)} for the job's MLflow run and registered model version."""
    from ftcore import tracking
    from ftcore.links import mlflow_model_version_url, mlflow_run_url

    links: dict[str, tuple[str, str | None]] = {}
    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    run_id = _mlflow_run_id(out)
    if run_id:
        url = None
        if tracking.is_server(uri):
            experiment_id = tracking.get_client(uri).get_run(run_id).info.experiment_id
            url = mlflow_run_url(uri, experiment_id, run_id)
        links["MLflow run"] = (run_id, url)
    registered = out.get("registered")
    if registered is not None:
        name, version = registered.metadata.get("name"), registered.metadata.get("version")
        url = mlflow_model_version_url(uri, name, version) if name and version else None
        links["Model version"] = (registered.path, url)
    return links
