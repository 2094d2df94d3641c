"""One Prefect task per pipeline step, made from ftcore's step table: each body calls the step's one
ftcore function and returns its artifact manifest. A new step in the table is a new task here."""

from __future__ import annotations

import inspect
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from ftcore.artifacts import Artifact
from ftcore.config.pipeline import PipelineConfig
from ftcore.steps import Step, steps
from tasks.common import cache_key, ftcore_logs, retry_unless_user_error
from tasks.reports import live_progress, publish_report


def step_task(step: Step) -> Task:
    """The Prefect task of `step`; its parameters are named like the step's inputs (shown in the UI)."""

    def body(cfg: PipelineConfig, *inputs: Artifact | None) -> Artifact:
        with ftcore_logs(), live_progress(cfg, step):
            artifact = step.run(cfg, *inputs)
        publish_report(cfg, step, artifact)
        return artifact

    params = [inspect.Parameter("cfg", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=PipelineConfig)]
    params += [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Artifact | None)
        for name in step.inputs
    ]
    body.__signature__ = inspect.Signature(params, return_annotation=Artifact)  # type: ignore[attr-defined]
    body.__name__ = body.__qualname__ = step.name
    body.__doc__ = (step.run.__doc__ or "").strip().splitlines()[0] if step.run.__doc__ else step.name
    options: dict[str, Any] = {
        "name": step.name,
        "retries": step.retries,
        "retry_delay_seconds": step.retry_delay_s,
        "retry_condition_fn": retry_unless_user_error,
    }
    if step.key is None:  # an action (alias move, adapter lookup): runs every time, nothing cached
        options.update(cache_policy=NO_CACHE, persist_result=False)
    else:
        # JSON, not pickle: cached results are plain manifests, and nothing unpickles files from disk.
        options.update(
            cache_key_fn=cache_key(step.name, step.key), persist_result=True, result_serializer="json"
        )
    return task(**options)(body)


TASKS: dict[str, Task] = {step.name: step_task(step) for step in steps()}
