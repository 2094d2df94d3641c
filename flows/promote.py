"""The promote flow: the gate on the candidate, as `ft promote CFG` runs it, with its report in the UI.

Call it from Python (`promote("cfg.yaml")`) or from a Prefect deployment (after each finetune run, or on
a schedule). A failed or refused gate is an outcome, not a crash: the flow run completes and returns
the decision; the markdown report is published as a Prefect artifact and logged to the candidate's
MLflow run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ftcore.config import PipelineConfig, load_config
from ftcore.promote import promote_version
from tasks.common import artifact_key, ftcore_logs


@task(name="gate", cache_policy=NO_CACHE, persist_result=False)
def gate(cfg: PipelineConfig) -> dict[str, Any]:
    """Compare the candidate with the champion (or the base) under registry.gate; promote it if it passes."""
    with ftcore_logs():
        return promote_version(cfg).metadata()


@flow(name="promote", validate_parameters=False)
def promote(config: PipelineConfig | dict | str, overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the promotion gate on the config's candidate; returns the decision (result, reason, report)."""
    from prefect.artifacts import create_markdown_artifact

    cfg = load_config(config, overrides)
    decision = gate(cfg)
    get_run_logger().info(
        "%s version %s: %s", decision["model_name"], decision["version"], decision["reason"]
    )
    key = artifact_key(cfg.registry.model_name, "promotion")
    create_markdown_artifact(
        markdown=decision["report"],
        key=key,
        description=f"promotion gate: {decision['model_name']} version {decision['version']}: "
        f"{decision['result']}",
    )
    return decision
