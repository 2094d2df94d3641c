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


def evaluate_key(cfg: PipelineConfig, model: Artifact, data: Artifact, trained: Artifact | None) -> str:
    inputs = [model.fingerprint, data.fingerprint, trained.fingerprint if trained else "base-only"]
    return stage_key("evaluate", section(cfg.eval, {"enabled"}), inputs)


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
