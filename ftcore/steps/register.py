"""register: an MLflow model version for the merged model with lineage tags; the alias moves apart.

Two steps with different lifetimes: `register` makes the version once per key (cacheable);
`assign_alias` points the alias at it on every run (uncached, one call), so after lr 1e-3, 2e-3, 1e-3
the alias is back on the first version even when `register` came from a cache.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import ftcore
from ftcore import tracking
from ftcore.artifacts import Artifact, hash_json
from ftcore.config.pipeline import PipelineConfig
from ftcore.steps.common import JobRun
from ftcore.steps.keys import register_key

log = logging.getLogger("ftcore.steps")


def config_hash(cfg: PipelineConfig) -> str:
    """Hash of what defines the job's result (not its name or where it runs)."""
    return hash_json(cfg.model_dump(mode="json", exclude={"base_dir", "name", "workdir", "serve"}))


def register(
    cfg: PipelineConfig, merged: Artifact, evaluation: Artifact | None, quantized: Artifact | None = None
) -> Artifact:
    """Create (or find, when it exists under the same key) the model version, then set the alias.

    A quantized export is part of the same version: its folder is the `quantized/` sub-artifact of the
    version's logged model, described by ftflow.quantization.* tags."""
    from ftcore import registry

    job = JobRun(cfg)
    key = register_key(cfg, merged, evaluation, job.uri, quantized)
    name = cfg.registry.model_name
    metrics = evaluation.metadata.get("metrics", {}) if evaluation else {}
    tags = registry.lineage_tags(
        config_hash=config_hash(cfg),
        dataset_fingerprint=merged.metadata.get("dataset_fingerprint") or "",
        base_model_ref=merged.metadata.get("base_model_ref") or cfg.model.name_or_path,
        base_model_revision=merged.metadata.get("base_model_revision") or "",
        ftflow_version=ftcore.__version__,
        metrics=metrics,
        eval_fingerprint=evaluation.metadata.get("eval_fingerprint", "") if evaluation else "",
        eval_config=evaluation.metadata.get("eval_config", "") if evaluation else "",
    )
    tags[f"{registry.TAG_PREFIX}objective"] = cfg.train.stage  # which stage made it (sft, rm, dpo, ...)
    if quantized is not None:
        tags.update(quantized.metadata.get("tags", {}))
        tags[registry.QUANTIZED_PATH_TAG] = registry.QUANTIZED_DIR
    existing = registry.find_version_by_key(job.client, name, key)
    if existing is not None:
        log.info("[register] %s version %s exists for this key", name, existing.version)
        info = {"name": name, "version": int(existing.version), "source": existing.source}
        info.update(run_id=existing.run_id, model_id=getattr(existing, "model_id", None))
    else:
        info = _upload(cfg, job, key, merged, tags, quantized)
    registered = Artifact(
        kind="registered",
        path=f"models:/{name}/{info['version']}",  # the version, not the alias: aliases move
        fingerprint=hash_json([key, info["version"]]),
        metadata={
            "key": key,
            "tracking_uri": job.uri,
            "merged_path": merged.path,
            "quantized_path": quantized.path if quantized is not None else None,
            **info,
            "tags": tags,
        },
    )
    return assign_alias(cfg, registered)


def _upload(
    cfg: PipelineConfig,
    job: JobRun,
    key: str,
    merged: Artifact,
    tags: dict[str, str],
    quantized: Artifact | None = None,
) -> dict:
    """Log the model under the training run (or a register run of its own, ended here) and register it."""
    from ftcore import registry

    job.run_id = _training_run(job, merged.metadata.get("mlflow_run_id"))
    scope: contextlib.AbstractContextManager = contextlib.nullcontext()
    if job.run_id is None:  # report_to: none, or the training run is gone: a run that only registers
        job = JobRun.for_key(cfg, key, {"ftflow.step": "register"})
        scope = job  # ended FINISHED, or FAILED if the upload fails: never left RUNNING
    with scope:
        if job.run_id and scope is job:
            job.params(cfg.model_dump(mode="json", exclude={"base_dir"}))
        model_id, source = registry.log_model(
            job.client,
            job.experiment_id,
            job.run_id,
            Path(merged.path),
            cfg.registry.model_name,
            cfg.model.trust_remote_code,
            quantized_dir=Path(quantized.path) if quantized is not None else None,
        )
        info = registry.register_model(
            job.client, cfg.registry.model_name, job.run_id, source, tags, key, model_id=model_id
        )
    return {**info, "model_id": model_id}


def _training_run(job: JobRun, run_id: str | None) -> str | None:
    """The training run to attach the model to, if it still exists in this store."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    try:
        run = job.client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        raise
    return run_id if run.info.lifecycle_stage == "active" else None


def assign_alias(cfg: PipelineConfig, registered: Artifact) -> Artifact:
    """Point `registry.alias` at this version: cheap and uncached, so it runs on every pipeline run.

    Moving an alias is a pointer move, never a new version; a cached `register` result still gets the
    alias back (the step table runs it as its own uncached step after `register`).
    """
    from ftcore import registry

    alias = cfg.registry.alias
    if alias:
        client = tracking.get_client(registered.metadata["tracking_uri"])
        name, version = registered.metadata["name"], registered.metadata["version"]
        registry.set_alias(client, name, alias, version)
        log.info("[register] %s version %s has alias '%s'", name, version, alias)
    return registered.model_copy(update={"metadata": {**registered.metadata, "alias": alias}})


def is_registered(cfg: PipelineConfig, artifact: Artifact) -> bool:
    """Whether a (cached) registered artifact's version still exists in this job's registry.

    False when the version was deleted or the job now points at another store: the flow then runs
    `register` again instead of trusting its cache.
    """
    if artifact.kind != "registered":
        return False
    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    meta = artifact.metadata
    if meta.get("tracking_uri") != uri or meta.get("name") != cfg.registry.model_name:
        return False
    from ftcore import registry

    return registry.version_exists(uri, meta["name"], meta["version"], meta["key"])
