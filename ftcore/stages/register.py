"""register: an MLflow model version for the merged model, with lineage tags and an alias."""

from __future__ import annotations

import logging
from pathlib import Path

import ftcore
from ftcore.artifacts import Artifact, hash_json
from ftcore.config.pipeline import PipelineConfig
from ftcore.stages.common import JobRun
from ftcore.stages.keys import register_key

log = logging.getLogger("ftcore.stages")


def config_hash(cfg: PipelineConfig) -> str:
    """Hash of what defines the job's result (not its name or where it runs)."""
    return hash_json(cfg.model_dump(mode="json", exclude={"base_dir", "name", "workdir", "serve"}))


def register(cfg: PipelineConfig, merged: Artifact, evaluation: Artifact | None) -> Artifact:
    """Create (or find, when it exists under the same key) the model version and set the alias."""
    from ftcore import registry

    job = JobRun(cfg)
    key = register_key(cfg, merged, evaluation, job.uri)
    existing = registry.find_version_by_key(job.client, cfg.registry.model_name, key)
    run_id = existing.run_id if existing else merged.metadata.get("mlflow_run_id")
    if run_id is None:
        run_id = JobRun.for_key(cfg, key, {"ftflow.stage": "register"}).run_id
    job.run_id = run_id
    if existing is None:
        job.artifacts(Path(merged.path), "model")  # with its manifest: lineage readable from the store
    source = job.client.get_run(run_id).info.artifact_uri.rstrip("/") + "/model"
    metrics = evaluation.metadata.get("metrics", {}) if evaluation else {}
    tags = registry.lineage_tags(
        config_hash=config_hash(cfg),
        dataset_fingerprint=merged.metadata.get("dataset_fingerprint") or "",
        base_model_ref=merged.metadata.get("base_model_ref") or cfg.model.name_or_path,
        base_model_revision=merged.metadata.get("base_model_revision") or "",
        ftflow_version=ftcore.__version__,
        metrics=metrics,
    )
    info = registry.register_model(
        job.client, cfg.registry.model_name, run_id, source, tags, cfg.registry.alias, key
    )
    log.info("[register] %s version %s has alias '%s'", info["name"], info["version"], cfg.registry.alias)
    return Artifact(
        kind="registered",
        path=f"models:/{info['name']}/{info['version']}",  # the version, not the alias: aliases move
        fingerprint=hash_json([key, info["version"]]),
        metadata={"key": key, "tracking_uri": job.uri, "merged_path": merged.path, **info, "tags": tags},
    )
