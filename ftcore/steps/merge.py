"""merge: adapter + base -> one model directory; full fine-tunes pass through unchanged."""

from __future__ import annotations

import logging

from ftcore.artifacts import Artifact, atomic_dir, fingerprint_path, write_manifest
from ftcore.config.loader import dump_config
from ftcore.config.pipeline import PipelineConfig
from ftcore.steps.common import reuse, step_dir
from ftcore.steps.keys import merge_key

log = logging.getLogger("ftcore.steps")


def merge(cfg: PipelineConfig, model: Artifact, trained: Artifact) -> Artifact:
    """The deployable model: the merged weights for LoRA, the trained weights for full tuning."""
    lineage = {
        k: trained.metadata.get(k)
        for k in (
            "base_model_ref",
            "base_model_revision",
            "template",
            "dataset_fingerprint",
            "finetuning_type",
            "mlflow_run_id",
        )
    }
    if trained.kind != "adapter" or not cfg.export.merge:
        return trained.model_copy(
            update={
                "kind": "merged" if trained.kind != "adapter" else "adapter",
                "metadata": {**trained.metadata, **lineage},
            }
        )
    key = merge_key(cfg, model, trained)
    out = step_dir(cfg, "merged", key, cfg.export.export_dir)
    done = reuse(out, key, "merge")
    if done is not None:
        return done

    from ftcore.export.merge import merge_lora

    with atomic_dir(out) as tmp:
        merge_lora(model.path, trained.path, tmp, cfg.model.trust_remote_code, lineage["template"])
        (tmp / "ftflow_config.yaml").write_text(dump_config(cfg))
        artifact = Artifact(
            kind="merged",
            path=str(out),
            fingerprint=fingerprint_path(tmp),
            metadata={"key": key, "adapter_path": trained.path, **lineage},
        )
        write_manifest(tmp, artifact)
    log.info("[merge] merged model written to %s", out)
    return artifact
