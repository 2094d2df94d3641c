"""fetch_model / fetch_dataset: references -> local files, with fingerprints for the caches."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ftcore.artifacts import Artifact, fingerprint_file, fingerprint_path, hash_json
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError
from ftcore.hub import resolve_model

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


def tokenizer_fingerprint(model_dir: Path) -> str:
    """Hash of the tokenizer files only: a new LoRA on the same base does not re-tokenize."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = model_dir / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(fingerprint_file(path).encode())
    return digest.hexdigest()


def fetch_model(cfg: PipelineConfig) -> Artifact:
    """Resolve the base model to a local directory (built-in, cache or hub) and fingerprint it."""
    from ftcore.data.template import infer_template

    resolved = resolve_model(cfg.model.name_or_path, cfg.model.revision, cfg.model.cache_dir)
    if resolved.source in ("hf", "ms") and resolved.revision:
        # a hub snapshot is immutable per commit: its id is its fingerprint (no hashing of GBs)
        fingerprint = hash_json([resolved.source, cfg.model.name_or_path, resolved.revision])
    else:
        fingerprint = fingerprint_path(resolved.path)
    return Artifact(
        kind="model",
        path=str(resolved.path),
        fingerprint=fingerprint,
        metadata={
            "ref": cfg.model.name_or_path,
            "source": resolved.source,
            "revision": resolved.revision,
            "template": infer_template(resolved.path),
            "tokenizer_fingerprint": tokenizer_fingerprint(resolved.path),
        },
    )


def fetch_dataset(cfg: PipelineConfig) -> Artifact:
    """Read and validate every row of the configured datasets; fail on the first bad file or row."""
    from ftcore.data.splits import build_splits, data_fingerprint

    dataset_dir = cfg.resolve_input(cfg.data.dataset_dir)
    if not dataset_dir.is_dir():
        raise ConfigError(f"data.dataset_dir: {dataset_dir} does not exist")
    splits = build_splits(cfg.data, dataset_dir)
    if not splits["train"]:
        raise ConfigError(f"data.dataset: {cfg.data.dataset} holds no training rows")
    return Artifact(
        kind="dataset",
        path=str(dataset_dir),
        fingerprint=data_fingerprint(cfg.data, dataset_dir),
        metadata={
            "datasets": cfg.data.dataset,
            "eval_datasets": cfg.data.eval_dataset,
            "train_rows": len(splits["train"]),
            "eval_rows": len(splits["eval"]),
        },
    )
