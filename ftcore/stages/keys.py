"""Cache keys of the stages, in one place: the stages use them to find finished artifacts, the
Prefect tasks use them as cache keys. A key = stage config section + input fingerprints + version."""

from __future__ import annotations

from ftcore.artifacts import Artifact, stage_key
from ftcore.config.pipeline import PipelineConfig
from ftcore.stages.common import section

# train fields that do not change the trained weights
TRAIN_NOT_IN_KEY = {
    "resume_from_checkpoint",
    "report_to",
    "output_dir",
    "logging_steps",
    "save_steps",
    "save_total_limit",
}


def fetch_model_key(cfg: PipelineConfig) -> str:
    """Hub snapshots and built-ins are immutable per reference; a local folder is keyed on its files'
    names, sizes and times (cheap), so editing it re-runs what depends on it."""
    from pathlib import Path

    from ftcore.builtin import BUILTIN_VERSION
    from ftcore.hub import parse_ref

    source, name, _ = parse_ref(cfg.model.name_or_path, cfg.model.revision)
    files: list[str] = [f"builtin-v{BUILTIN_VERSION}"] if source == "builtin" else []
    if source == "local" and Path(name).is_dir():
        files = [
            f"{p.relative_to(name)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
            for p in sorted(Path(name).rglob("*"))
            if p.is_file()
        ]
    return stage_key("fetch_model", section(cfg.model, {"adapter_name_or_path"}), files)


def preprocess_key(cfg: PipelineConfig, model: Artifact, dataset: Artifact, template: str) -> str:
    return stage_key(
        "preprocess",
        {"data": section(cfg.data, {"dataset_dir"}), "template": template, "stage": cfg.train.stage},
        [model.metadata["tokenizer_fingerprint"], dataset.fingerprint],
    )


def train_key(cfg: PipelineConfig, model: Artifact, data: Artifact) -> str:
    return stage_key(
        "train",
        {"train": section(cfg.train, TRAIN_NOT_IN_KEY), "trust_remote_code": cfg.model.trust_remote_code},
        [model.fingerprint, data.fingerprint],
    )


# Bump with every change of ftcore/evaluate/* or stages/evaluate.py that can change evaluation results.
EVALUATE_VERSION = 2


def eval_dtype(cfg: PipelineConfig) -> str:
    """Evaluation runs in the training precision: bf16 when train.bf16 resolves on, else fp32."""
    from ftcore.train.sft import resolve_bf16

    return "bfloat16" if resolve_bf16(cfg.train) else "float32"


def _eval_inputs(cfg: PipelineConfig, data: Artifact) -> dict:
    """What every score of a model on the eval split depends on, besides the model."""
    return {
        "eval": section(cfg.eval, {"enabled", "compare_base"}),
        "dtype": eval_dtype(cfg),
        "template": data.metadata.get("template"),
        "version": EVALUATE_VERSION,
    }


def evaluate_key(cfg: PipelineConfig, model: Artifact, data: Artifact, trained: Artifact | None) -> str:
    """Keyed on the eval split only (data.metadata eval_fingerprint when the tokenized artifact has it):
    what the training data did is in the trained fingerprint already."""
    eval_data = data.metadata.get("eval_fingerprint", data.fingerprint)
    inputs = [model.fingerprint, eval_data, trained.fingerprint if trained else "base-only"]
    return stage_key("evaluate", {**_eval_inputs(cfg, data), "compare_base": cfg.eval.compare_base}, inputs)


def evaluate_base_key(cfg: PipelineConfig, model: Artifact, data: Artifact) -> str:
    """The base model's scores: shared by every job on the same base model, eval split and eval
    settings, whatever they train (learning rate, method, training data)."""
    eval_data = data.metadata.get("eval_fingerprint", data.fingerprint)
    return stage_key("evaluate_base", _eval_inputs(cfg, data), [model.fingerprint, eval_data])


def merge_key(cfg: PipelineConfig, model: Artifact, trained: Artifact) -> str:
    return stage_key("merge", section(cfg.export, {"export_dir"}), [model.fingerprint, trained.fingerprint])


def register_key(
    cfg: PipelineConfig, merged: Artifact, evaluation: Artifact | None, tracking_uri: str
) -> str:
    """The alias is not in the key: moving it is a pointer move (register.assign_alias), not a version."""
    return stage_key(
        "register",
        section(cfg.registry, {"tracking_uri", "enabled", "alias"}),
        [merged.fingerprint, evaluation.fingerprint if evaluation else ""],
        extra=tracking_uri,
    )


def fetch_dataset_key(cfg: PipelineConfig) -> str:
    """Keyed on the files' content too: editing a data file re-runs everything downstream."""
    from ftcore.data.splits import data_fingerprint

    return stage_key(
        "fetch_dataset",
        section(cfg.data),
        [data_fingerprint(cfg.data, cfg.resolve_input(cfg.data.dataset_dir))],
    )
