"""Board jobs that are runs of a Prefect deployment: when PREFECT_API_URL names a server and a finetune
deployment is chosen (the Train area's "Run on", or FTFLOW_BOARD_DEPLOYMENT="finetune/NAME"), Start
creates a flow run of that deployment with the form's config as its parameter; a work pool worker
runs it, wherever that worker is. The board then reads the run back from the server: its state, its
logs (the train step's progress lines among them) and its link artifacts; Stop cancels it (the worker
SIGTERMs the run, the training worker stops cleanly and keeps its last checkpoint).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ftcore.config import PipelineConfig
from ftcore.errors import ConfigError, ServiceUnavailableError

DEPLOYMENT_ENV = "FTFLOW_BOARD_DEPLOYMENT"
LOCAL = "this machine (ft run)"  # the "Run on" choice that starts `ft run` as a local process
PAGE = 200  # logs per request (the server's default limit)

SETTLE_S = 30.0  # after a run ends, its last log batches may still arrive for this long
_logs: dict[str, tuple[list[str], bool]] = {}  # flow run id -> (log lines read so far, settled)
_logs_lock = threading.Lock()


@dataclass
class FlowRunInfo:
    """What the server says about a flow run."""

    id: str
    name: str
    state_type: str  # SCHEDULED / PENDING / RUNNING / COMPLETED / FAILED / CANCELLED / CRASHED / ...
    state_name: str  # Scheduled, Late, Running, Cancelling, Completed, ...
    url: str = ""
    log: str = ""
    links: dict[str, str] = field(default_factory=dict)  # link artifacts: description -> markdown link


def api_url() -> str | None:
    """The configured Prefect server, None when the board runs jobs against a temporary one."""
    from flows.local_server import configured_api_url

    return configured_api_url()


def finetune_deployments() -> list[str]:
    """ "finetune/NAME" of each finetune deployment on the configured server ([] without a server or
    when it does not answer: the board then runs jobs as local processes)."""
    if not api_url():
        return []
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    try:
        with get_client(sync_client=True) as client:
            found = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=["finetune"])))
    except Exception as exc:  # unreachable server: a board that still starts
        logging.getLogger("webui").warning("could not list deployments: %s", exc)
        return []
    return sorted(f"finetune/{d.name}" for d in found)


def default_target() -> str:
    """The "Run on" choice a board starts with: FTFLOW_BOARD_DEPLOYMENT when set, else local."""
    return os.environ.get(DEPLOYMENT_ENV) or LOCAL


def target_choices() -> list[str]:
    """The "Run on" choices: local, the server's finetune deployments, and the env's one."""
    choices = [LOCAL, *finetune_deployments()]
    chosen = default_target()
    return choices if chosen in choices else [*choices, chosen]


def check_target(deployment: str) -> None:
    """A deployment target needs a Prefect server and a deployment of that name on it."""
    if not deployment.startswith("finetune/"):
        raise ConfigError(f"run on: '{deployment}' is not a finetune deployment (finetune/NAME)")
    if not api_url():
        raise ServiceUnavailableError(
            f"run on {deployment}: no Prefect server configured; set PREFECT_API_URL (e.g. "
            "http://127.0.0.1:4200/api) before `ft webui`, or run on this machine"
        )
    from flows.deploy import require_server
    from flows.trigger import _deployment

    require_server()  # reachable, or a clear error naming the server
    _deployment(deployment)  # exists, or a clear error naming it


def start(deployment: str, cfg: PipelineConfig) -> FlowRunInfo:
    """A flow run of `deployment` with this config (its paths made absolute, as `ft deploy` does);
    returns at once (the worker picks it up)."""
    from prefect.deployments import run_deployment

    from flows.deploy import deployable_config
    from flows.finetune import job_tags

    check_target(deployment)
    params = {"config": deployable_config(cfg)}
    run = run_deployment(deployment, parameters=params, timeout=0, tags=job_tags(cfg), as_subflow=False)
    state = run.state
    return FlowRunInfo(
        str(run.id),
        run.name,
        state.type.value if state else "SCHEDULED",
        state.name if state else "Scheduled",
        _url(str(run.id)),
    )


def _url(flow_run_id: str) -> str:
    from prefect.settings import get_current_settings

    from ftcore.links import prefect_flow_run_url

    return prefect_flow_run_url(get_current_settings().ui_url, flow_run_id) or ""


def read(flow_run_id: str) -> FlowRunInfo:
    """The flow run's state, its log so far and its link artifacts (MLflow run, model version)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        final = run.state is not None and run.state.is_final()
        with _logs_lock:
            lines, settled = _logs.get(flow_run_id, ([], False))
            if not settled:
                # while it runs, only the new lines; once it ended, all again until its last batches
                # are in (they are sorted by time: a batch sent late could land before lines read)
                lines = [] if final else list(lines)
                while True:
                    page = client.read_logs(
                        LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])),
                        limit=PAGE,
                        offset=len(lines),
                    )
                    lines += [_line(entry) for entry in page]
                    if len(page) < PAGE:
                        break
                ended = run.end_time.timestamp() if final and run.end_time else None
                _logs[flow_run_id] = (lines, ended is not None and time.time() - ended > SETTLE_S)
            log = "\n".join(lines)
        links = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]),
                type=ArtifactFilterType(any_=["link"]),
            )
        )
    state = run.state
    return FlowRunInfo(
        flow_run_id,
        run.name,
        state.type.value if state else "SCHEDULED",
        state.name if state else "Scheduled",
        _url(flow_run_id),
        log,
        {(a.description or a.key or "link"): str(a.data) for a in links},
    )


def read_state(flow_run_id: str) -> str:
    """The run's state type alone (is it still going?)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    return state.type.value if state else "SCHEDULED"


def _line(entry: Any) -> str:
    return f"{entry.timestamp:%H:%M:%S} | {logging.getLevelName(entry.level):<7} | {entry.message}"


def cancel(flow_run_id: str) -> bool:
    """Ask the server to cancel the run (its worker then stops it); False when it had already ended."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State, StateType

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        if run.state is not None and run.state.is_final():
            return False
        # a run no worker has picked up yet is cancelled outright; a running one is stopped by its worker
        waiting = run.state is not None and run.state.type == StateType.SCHEDULED
        target = StateType.CANCELLED if waiting else StateType.CANCELLING
        client.set_flow_run_state(UUID(flow_run_id), State(type=target))
    return True
