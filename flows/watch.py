"""Event triggers: a small watcher flow that starts a deployment when the job's data files change or
a registry alias moves.

Deployed by `ft deploy CFG --on-data-change` / `--on-alias champion` beside the deployment it
guards, on an interval schedule: each run looks once, compares with the snapshot it stored in a
Prefect Variable (so any worker sees the same state) and calls Prefect's run_deployment when
something moved. Prefect automations react to Prefect events; a data file or an MLflow alias emits
none, hence a watcher.
"""

from __future__ import annotations

import re
from typing import Any

from prefect import flow, get_run_logger

from ftcore.config import PipelineConfig, load_config
from ftcore.watch import changes, snapshot


def state_name(deployment: str) -> str:
    """The Prefect Variable that holds the last snapshot for `deployment` (names allow [a-z0-9_-])."""
    return "ftflow_watch_" + re.sub(r"[^a-z0-9_]+", "_", deployment.lower()).strip("_")


@flow(name="watch", validate_parameters=False)
def watch(
    config: PipelineConfig | dict | str,
    deployment: str,
    data: bool = True,
    alias: str | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Look once; start `deployment` (FLOW/NAME) when the watched data or alias moved since last time.
    The first look only records what it saw."""
    from prefect.deployments import run_deployment
    from prefect.variables import Variable

    cfg = load_config(config, overrides)
    logger = get_run_logger()
    now = snapshot(cfg, data=data, alias=alias)
    name = state_name(deployment)
    before = Variable.get(name, default=None)
    reasons = changes(before, now)
    started = None
    if reasons:
        logger.info("%s: %s: starting %s", cfg.name, "; ".join(reasons), deployment)
        run = run_deployment(deployment, timeout=0, tags=["ftflow", "trigger:watch"], as_subflow=False)
        started = str(run.id)
    elif before is None:
        logger.info("%s: first look, baseline recorded", cfg.name)
    Variable.set(name, now, overwrite=True)
    return {"reasons": reasons, "flow_run_id": started, "snapshot": now}
