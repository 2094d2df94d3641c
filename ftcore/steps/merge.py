"""merge: adapter + base -> one model directory; full fine-tunes pass through unchanged.

The merged folder also carries its model card (README.md, with the eval scores when the pipeline
evaluated) and an Ollama Modelfile. Its folder is keyed on the weights alone: a new evaluation only
rewrites the card, it never merges again.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ftcore.artifacts import Artifact, atomic_dir, fingerprint_path, read_manifest, write_manifest
from ftcore.config.loader import dump_config
from ftcore.config.pipeline import PipelineConfig
from ftcore.steps.common import reuse, step_dir
from ftcore.steps.keys import merge_key, merge_weights_key

log = logging.getLogger("ftcore.steps")

LINEAGE = (
    "base_model_ref",
    "base_model_revision",
    "template",
    "dataset_fingerprint",
    "finetuning_type",
    "mlflow_run_id",
)


def merge(
    cfg: PipelineConfig, model: Artifact, trained: Artifact, evaluation: Artifact | None = None
) -> Artifact:
    """The deployable model folder, with its model card and Ollama Modelfile: the merged weights for
    LoRA, the trained weights for full tuning (hard links: no copy); the adapter alone when
    export.merge is false."""
    lineage = {k: trained.metadata.get(k) for k in LINEAGE}
    full = trained.kind != "adapter"
    if not full and not cfg.export.merge:  # the adapter itself is the deliverable
        return trained.model_copy(update={"kind": "adapter", "metadata": {**trained.metadata, **lineage}})
    from ftcore.export.merge import check_mergeable_base

    if not full:
        check_mergeable_base(model.path)  # a quantized base is refused before anything loads
    weights_key = merge_weights_key(cfg, model, trained)
    key = merge_key(cfg, model, trained, evaluation)
    out = step_dir(cfg, "merged", weights_key, cfg.export.export_dir)
    done = reuse(out, key, "merge")
    if done is not None:
        return done
    lineage["template"] = lineage["template"] or (cfg.data.template if cfg.data.template != "auto" else None)
    card = {
        **lineage,
        "adapter_path": trained.path,
        "eval_fingerprint": evaluation.metadata.get("eval_fingerprint") if evaluation else None,
    }
    metrics = evaluation.metadata.get("metrics") if evaluation else None
    metadata = {"key": key, "weights_key": weights_key, "adapter_path": trained.path, **lineage}
    previous = read_manifest(out)
    if previous is not None and previous.metadata.get("weights_key") == weights_key:
        _replace_docs(out, cfg, card, metrics)  # same weights, other scores: only the card changes
        artifact = Artifact(
            kind="merged", path=str(out), fingerprint=fingerprint_path(out), metadata=metadata
        )
        write_manifest(out, artifact)
        log.info("[merge] model card of %s updated", out)
        return artifact

    from ftcore.export.merge import export_full, merge_lora

    export = cfg.export
    with atomic_dir(out) as tmp:
        if full:  # the trained weights themselves (hard-linked, or re-saved for dtype / shard size)
            export_full(trained.path, tmp, cfg.model.trust_remote_code, export.dtype, export.export_size)
        else:
            merge_lora(
                model.path,
                trained.path,
                tmp,
                cfg.model.trust_remote_code,
                lineage["template"],
                dtype=export.dtype,
                max_shard_gb=export.export_size,
                device=export.export_device,
            )
        (tmp / "ftflow_config.yaml").write_text(dump_config(cfg))
        write_docs(tmp, cfg, card, metrics)
        artifact = Artifact(
            kind="merged", path=str(out), fingerprint=fingerprint_path(tmp), metadata=metadata
        )
        write_manifest(tmp, artifact)
    log.info("[merge] merged model written to %s", out)
    return artifact


def write_docs(
    out: Path,
    cfg: PipelineConfig,
    lineage: dict[str, Any],
    metrics: dict | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """README.md (model card) and, when the chat template is known, the Ollama Modelfile; `extra`
    adds rows to the card's export table (the quantized export's settings)."""
    from ftcore.data.template import infer_template
    from ftcore.export.card import write_model_card
    from ftcore.export.modelfile import write_modelfile
    from ftcore.modeling import saved_head

    write_model_card(out, cfg, lineage, metrics, extra)
    template = lineage.get("template") or infer_template(out)
    if saved_head(out) == "score":  # a reward model scores text, it does not chat: no Ollama Modelfile
        log.info("[merge] %s is a reward model: no Ollama Modelfile written", out)
    elif template:
        write_modelfile(out, template)
    else:
        log.info("[merge] no chat template known for %s: no Ollama Modelfile written", out)


def _replace_docs(out: Path, cfg: PipelineConfig, lineage: dict[str, Any], metrics: dict | None) -> None:
    """Rewrite the docs of a finished folder file by file (each a rename), never touching weights."""
    scratch = Path(tempfile.mkdtemp(prefix=".docs-", dir=out))  # hidden: outside the fingerprint
    try:
        write_docs(scratch, cfg, lineage, metrics)
        for file in scratch.iterdir():
            os.replace(file, out / file.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
