"""Deployments: ftflow's flows registered with a Prefect server, scheduled, run by work pool workers.

`ft deploy CFG` registers the finetune flow (or the promote / serve flow) with the job's config as its
typed parameter, a schedule, a work pool and a concurrency limit; `ft trigger NAME key=value` starts a
run of a deployment with overrides. prefect.yaml declares the same deployments for
`prefect deploy --all`. This uses Prefect's own mechanisms throughout (work pools, workers,
deployment concurrency limits, run_deployment) rather than a scheduler of our own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from flows.finetune import job_tags
from ftcore.config import PipelineConfig, load_config
from ftcore.config.recipe import Recipe, is_recipe, load_recipe
from ftcore.errors import ConfigError, ServiceUnavailableError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POOL = "ftflow-process"
# flow name -> entrypoint in this repository (what a worker imports)
ENTRYPOINTS = {
    "finetune": "flows/finetune.py:finetune",
    "promote": "flows/promote.py:promote",
    "serve": "flows/serve.py:serve_champion",  # long-running: the champion, blue/green on each move
    "recipe": "flows/recipe.py:recipe",  # a recipe's jobs as one flow (a `jobs:` file)
}
WATCH_ENTRYPOINT = "flows/watch.py:watch"  # the event-trigger watcher (--on-data-change / --on-alias)
Collision = Literal["enqueue", "cancel"]


@dataclass
class Deployed:
    id: str
    name: str  # "flow/deployment", what `ft trigger` and run_deployment take
    pool: str
    schedule: str | None
    watcher: str | None = None  # the event-trigger deployment, when one was asked for


def deployable_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The config as the deployment's parameter: input and output paths made absolute, so a worker
    running in another folder reads the same data and writes to the same workdir."""
    dataset_dir = cfg.resolve_input(cfg.data.dataset_dir)
    if not dataset_dir.is_dir():
        raise ConfigError(
            f"data.dataset_dir: {dataset_dir} does not exist (relative paths are read from the current "
            "folder, then the config file's folder)"
        )
    data = cfg.data.model_copy(update={"dataset_dir": str(dataset_dir)})
    fixed = cfg.model_copy(update={"data": data, "workdir": str(cfg.workdir_path)})
    return fixed.model_dump(mode="json", exclude={"base_dir"})


def flow_parameters(flow: str, cfg: PipelineConfig | Recipe) -> dict[str, Any]:
    """The deployment's parameters: the config for finetune / promote; for serve, what to follow (the
    registry alias serve.model_alias of registry.model_name) and where the registry is; for a recipe,
    the recipe with its jobs inline."""
    if isinstance(cfg, Recipe):
        from flows.recipe import deployable_recipe

        return {"recipe": deployable_recipe(cfg)}
    if flow != "serve":
        return {"config": deployable_config(cfg)}
    from ftcore.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    return {
        "target": f"models:/{cfg.registry.model_name}@{cfg.serve.model_alias}",
        "tracking_uri": uri,
        "port": cfg.serve.port,
        "host": cfg.serve.host,
        "backend": cfg.serve.backend,
    }


def deployment_name(cfg: PipelineConfig | Recipe, name: str | None) -> str:
    return name or re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name)


def require_server() -> str:
    """Deployments live on a Prefect server that outlives this process: the temporary one would not."""
    from flows.local_server import configured_api_url
    from ftcore.doctor import check_prefect

    url = configured_api_url()
    if not url:
        raise ServiceUnavailableError(
            "deployments need a Prefect server that keeps running: start one (`prefect server start`, or "
            "deploy/docker) and set PREFECT_API_URL, e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    finding = check_prefect(url)[0]
    if finding.level == "fail":
        raise ServiceUnavailableError(f"{finding.detail}; {finding.fix}")
    return url


def ensure_process_pool(pool: str) -> None:
    """Create `pool` as a process work pool when it does not exist (docker / kubernetes pools are
    created by their own integrations: see deploy/README.md)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def ensure() -> None:
        async with get_client() as client:
            try:
                await client.read_work_pool(pool)
            except ObjectNotFound:
                await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))

    run_coro_as_sync(ensure())


def deploy(
    cfg: PipelineConfig | Recipe,
    flow: str = "finetune",
    name: str | None = None,
    cron: str | None = None,
    interval: float | None = None,
    pool: str = DEFAULT_POOL,
    concurrency: int = 1,
    collision: Collision = "enqueue",
    paused: bool = False,
    start_at: datetime | None = None,
    on_data_change: bool = False,
    on_alias: str | None = None,
    poll_s: float = 60.0,
) -> Deployed:
    """Register `flow` for this config on the Prefect server; returns what `ft trigger` needs.

    `concurrency` runs of this deployment at once (1: two trainings of one job never overlap); a run
    that would exceed it waits (`enqueue`) or is cancelled (`cancel`). `start_at` anchors an interval
    schedule (its first run); cron schedules follow the clock. `on_data_change` / `on_alias` add a
    watcher deployment (flows/watch.py, every `poll_s` seconds) that starts this one when the job's
    data files change or the registry alias `on_alias` moves.
    """
    from prefect import Flow
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    if isinstance(cfg, Recipe) != (flow == "recipe"):
        raise ConfigError(
            f"ft deploy --flow {flow}: the recipe flow takes a recipe file, the others a job config"
        )
    if isinstance(cfg, Recipe) and (on_data_change or on_alias):
        raise ConfigError("ft deploy: --on-data-change / --on-alias watch one job; deploy that job's config")
    if flow not in ENTRYPOINTS:
        raise ConfigError(
            f"ft deploy --flow: '{flow}' is not a deployable flow; choose {', '.join(ENTRYPOINTS)}"
        )
    if cron and interval:
        raise ConfigError("ft deploy: give --cron or --interval, not both")
    if start_at and not interval:
        raise ConfigError("ft deploy --start-at: only an --interval schedule has a start")
    require_server()
    ensure_process_pool(pool)
    deployment = deployment_name(cfg, name)
    source = Flow.from_source(source=str(REPO_ROOT), entrypoint=ENTRYPOINTS[flow])
    strategy = (
        ConcurrencyLimitStrategy.ENQUEUE if collision == "enqueue" else ConcurrencyLimitStrategy.CANCEL_NEW
    )
    schedules = None
    if interval and start_at:
        from prefect.client.schemas.schedules import IntervalSchedule

        schedules = [IntervalSchedule(interval=timedelta(seconds=interval), anchor_date=start_at)]
    deployment_id = source.deploy(
        name=deployment,
        work_pool_name=pool,
        cron=cron,
        interval=None if schedules else interval,
        schedules=schedules,
        paused=paused,
        parameters=flow_parameters(flow, cfg),
        concurrency_limit=ConcurrencyLimitConfig(limit=concurrency, collision_strategy=strategy),
        tags=["ftflow", f"recipe:{cfg.name}"] if isinstance(cfg, Recipe) else job_tags(cfg),
        description=f"ftflow {flow} of job {cfg.name}",
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,  # Prefect's note that process pools need a worker: `ft deploy` prints it
        # the config's own validation (pydantic, with field names) runs in the flow
        enforce_parameter_schema=False,
    )
    schedule = f"cron {cron}" if cron else (f"every {interval:g} s" if interval else None)
    if schedule and start_at:
        schedule += f" from {start_at.isoformat()}"
    deployed = Deployed(id=str(deployment_id), name=f"{flow}/{deployment}", pool=pool, schedule=schedule)
    if on_data_change or on_alias:
        watcher = Flow.from_source(source=str(REPO_ROOT), entrypoint=WATCH_ENTRYPOINT).deploy(
            name=f"{deployment}-watch",
            work_pool_name=pool,
            interval=poll_s,
            paused=paused,
            parameters={
                "config": deployable_config(cfg),
                "deployment": deployed.name,
                "data": on_data_change,
                "alias": on_alias,
            },
            # one look at a time; a look that would overlap the previous one is dropped
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
            ),
            tags=["ftflow", f"job:{cfg.name}", "watch"],
            description=f"starts {deployed.name} when "
            + " or ".join(
                ([f"the data of {cfg.name} changes"] if on_data_change else [])
                + ([f"{on_alias} moves"] if on_alias else [])
            ),
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
            enforce_parameter_schema=False,
        )
        deployed.watcher = f"watch/{deployment}-watch ({watcher})"
    return deployed


def deploy_file(path: str | Path, overrides: list[str] | None = None, **options: Any) -> Deployed:
    """`deploy` for a YAML config file (what `ft deploy CFG key=value` runs); a recipe file deploys
    the recipe flow."""
    if is_recipe(path):
        if options.get("flow", "finetune") == "finetune":
            options["flow"] = "recipe"
        return deploy(load_recipe(path, overrides), **options)
    return deploy(load_config(path, overrides), **options)
