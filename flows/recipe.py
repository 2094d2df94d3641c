"""The recipe flow: a recipe's jobs (sft -> dpo, sft -> rm -> ppo, ...) as one Prefect flow run.

Each job runs as a finetune subflow run, with the same tasks and the same cache keys as on its own;
a job's `job:` references are resolved to its upstream jobs' artifacts just before it starts. So
changing a setting of one job re-runs that job's changed steps and what depends on them; the jobs
before it come from cache. Call it from Python (`recipe("configs/recipes/sft_then_sft.yaml")`),
the CLI (`ft run RECIPE.yaml jobs.JOB.key=value ...`) or a deployment (`ft deploy RECIPE.yaml`).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from flows.finetune import finetune
from ftcore.artifacts import Artifact
from ftcore.config.recipe import Recipe, load_recipe, recipe_dict
from ftcore.recipe import check_recipe, resolve_job
from tasks.common import artifact_key


@flow(name="recipe", validate_parameters=False, persist_result=True, result_serializer="json")
def recipe(recipe: dict | str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every job of the recipe in order; returns each job's finetune result (summary, artifacts)."""
    loaded = load_recipe(recipe, overrides)
    logger = get_run_logger()
    logger.info("recipe %s: jobs %s", loaded.name, " -> ".join(loaded.jobs))
    check_recipe(loaded)  # every job's references and inputs, before the first one trains

    from prefect import tags

    outputs: dict[str, dict[str, Artifact]] = {}
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    with tags("ftflow", f"recipe:{loaded.name}"):
        for job in loaded.jobs:
            start = time.monotonic()
            cfg = resolve_job(loaded, job, outputs)
            for ref in loaded.refs_of(job):
                logger.info("%s: %s = job:%s/%s", job, ref.field, ref.target, ref.artifact)
            result = finetune.with_options(flow_run_name=f"{loaded.name}-{job}")(cfg)
            outputs[job] = {name: Artifact.model_validate(a) for name, a in result["artifacts"].items()}
            results[job] = result
            seconds[job] = round(time.monotonic() - start, 1)
    _publish_summary(loaded, results, seconds)
    return {"recipe": loaded.name, "jobs": results}


def deployable_recipe(loaded: Recipe) -> dict[str, Any]:
    """The recipe as a deployment's parameter: jobs inline, paths absolute (flows.deploy)."""
    from flows.deploy import deployable_config

    raw = recipe_dict(loaded)
    raw["jobs"] = {job: deployable_config(cfg) for job, cfg in loaded.jobs.items()}
    raw["workdir"] = str(loaded.jobs[next(iter(loaded.jobs))].resolve_path(loaded.workdir))
    return raw


def _publish_summary(loaded: Recipe, results: dict[str, Any], seconds: dict[str, float]) -> None:
    """A markdown artifact: per job, how many steps ran and came from cache, and its model."""
    from prefect.artifacts import create_markdown_artifact

    lines = ["| job | takes | steps run | from cache | seconds | merged model |", "|---|---|---|---|---|---|"]
    for job, result in results.items():
        states = [row["state"] for row in result["summary"]]
        takes = ", ".join(f"{r.field} = job:{r.target}/{r.artifact}" for r in loaded.refs_of(job)) or "-"
        merged = result["artifacts"].get("merged", {}).get("path", "-")
        lines.append(
            f"| {job} | {takes} | {states.count('Completed')} | {states.count('Cached')} | {seconds[job]} "
            f"| `{merged}` |"
        )
    create_markdown_artifact(
        markdown="\n".join(lines),
        key=artifact_key(loaded.name, "recipe"),
        description=f"ftflow recipe {loaded.name}",
    )
