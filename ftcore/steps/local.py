"""Checks before heavy work, and the steps run in order without an orchestrator (`ft train` ...)."""

from __future__ import annotations

import logging
from collections.abc import Collection

from ftcore.artifacts import Artifact, clean_stale_temps, fingerprint_path
from ftcore.config.pipeline import PipelineConfig
from ftcore.config.recipe import REF_PREFIX  # a recipe reference, checked by check_recipe
from ftcore.errors import ConfigError
from ftcore.hub import parse_ref
from ftcore.outputs import check_outputs, resolve_adapter_dir
from ftcore.steps.common import check_tracking, reuse, step_dir

log = logging.getLogger("ftcore.steps")

# temp dirs older than this in the job's workdir belong to killed steps, not to running ones
STALE_TEMP_S = 6 * 3600


def preflight(cfg: PipelineConfig, planned: Collection[str] | None = None) -> None:
    """Fail in seconds on what would otherwise fail minutes in: names, files, rows, model refs, servers.
    `planned` names the steps that will run (None: the whole pipeline), for the checks of later steps
    (a merge into a quantized base, a Hub push while offline).

    The one full parse of the data happens here (into the shared Arrow cache the fetch_dataset step
    reuses), so a first run on big data takes as long as that parse."""
    from ftcore.builtin import BUILTINS
    from ftcore.data.template import get_template
    from ftcore.errors import ModelNotAvailableError
    from ftcore.export.quantizers.calibration import check_quantization
    from ftcore.hub import resolve_model
    from ftcore.promote import check_config as check_gate
    from ftcore.steps.fetch import fetch_dataset
    from ftcore.train.distributed import check_distributed

    if cfg.data.template and cfg.data.template != "auto":
        get_template(cfg.data.template)
    source, name, _ = parse_ref(cfg.model.name_or_path, cfg.model.revision)
    if source == "builtin":
        if name not in BUILTINS:
            raise ModelNotAvailableError(
                f"model.name_or_path: unknown built-in 'builtin:{name}'; "
                f"available: {', '.join(sorted(BUILTINS))}"
            )
    else:
        base = resolve_model(cfg.model.name_or_path, cfg.model.revision, cfg.model.cache_dir)
        if planned is None or "train" in planned:
            from ftcore.train.methods.speed import check_base_trainable

            check_base_trainable(base.path)  # GPTQ / AWQ checkpoints train only on a GPU
        if cfg.export.merge and (planned is None or "merge" in planned):
            from ftcore.export.merge import check_mergeable_base

            check_mergeable_base(base.path)
    if planned is None or "train" in planned:
        from ftcore.train.methods.speed import check_speed

        check_speed(cfg.train.speed)  # fa2 / liger / unsloth: a GPU and their package
        reward_model = cfg.train.rl.reward_model
        if cfg.train.stage == "ppo" and reward_model and not reward_model.startswith(REF_PREFIX):
            from ftcore.tracking import resolve_tracking_uri
            from ftcore.train.rewards import check_reward_model

            uri = resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
            check_reward_model(reward_model, uri)  # a model folder, or a registered version
    if cfg.export.export_hub_model_id and (planned is None or "push" in planned):
        from ftcore.export.push import check_push

        check_push(cfg.export.export_hub_model_id)  # offline or no token: fail before training
    if cfg.model.adapter_name_or_path:
        resolve_adapter_dir(cfg.model.adapter_name_or_path)
    dataset_dir = cfg.resolve_input(cfg.data.dataset_dir)
    if not dataset_dir.is_dir():
        raise ConfigError(f"data.dataset_dir: {dataset_dir} does not exist")
    check_gate(cfg)  # registry.promote needs the scores the gate compares
    if cfg.eval.enabled and cfg.eval.tasks:  # benchmark names, and hub data reachable or cached
        from ftcore.evaluate.benchmarks import check_tasks

        check_tasks(cfg.eval.tasks)
    check_distributed(cfg)  # launcher settings, DeepSpeed / FSDP files, options that need one process
    check_quantization(cfg)  # merge first, bits the method supports, its side env, calibration data
    check_outputs(cfg)  # workdir writable; a chosen output folder holds nothing ftflow did not write
    # every row is parsed once, into FTFLOW_HOME's Arrow cache that the fetch_dataset step then reuses
    # (a bad file or row is named here, before any heavy work; nothing is written to the workdir)
    fetch_dataset(cfg)
    check_tracking(cfg)  # an unreachable MLflow server fails here, in seconds
    for stale in clean_stale_temps(cfg.workdir_path, older_than_s=STALE_TEMP_S):
        log.info("removed %s, left by a step that was killed", stale)


def external_adapter(cfg: PipelineConfig, model: Artifact) -> Artifact:
    """An adapter the user already has (model.adapter_name_or_path), as a train-step artifact."""
    path = resolve_adapter_dir(cfg.model.adapter_name_or_path)  # the folder itself or its model/
    return Artifact(
        kind="adapter",
        path=str(path),
        fingerprint=fingerprint_path(path),
        metadata={
            "base_model_ref": model.metadata.get("ref"),
            "base_model_revision": model.metadata.get("revision"),
            "finetuning_type": "lora",
            "external": True,
        },
    )


def find_trained(cfg: PipelineConfig, model: Artifact, data: Artifact) -> Artifact | None:
    """The finished training result for this config, without training."""
    from ftcore.steps.keys import train_key

    key = train_key(cfg, model, data)
    return reuse(step_dir(cfg, "train", key, cfg.train.output_dir), key, "train")
