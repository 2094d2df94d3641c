"""fetch_model / fetch_dataset: references -> local files, with fingerprints for the caches."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from ftcore.artifacts import (
    Artifact,
    atomic_dir,
    fingerprint_file,
    fingerprint_path,
    hash_json,
    write_manifest,
)
from ftcore.builtin import ftflow_home
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError
from ftcore.hub import resolve_model
from ftcore.steps.common import reuse

log = logging.getLogger("ftcore.steps")

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
    """Parse and validate every row of the configured datasets once (the first bad file or row fails,
    named) and keep them as Arrow train / eval splits in FTFLOW_HOME/datasets, shared by every job
    on the same data and selection."""
    from ftcore.data.loader import RowStats
    from ftcore.data.processor import data_kind
    from ftcore.data.splits import write_splits
    from ftcore.steps.keys import dataset_fingerprints, fetch_dataset_key

    dataset_dir = cfg.resolve_input(cfg.data.dataset_dir)
    if not dataset_dir.is_dir():
        raise ConfigError(f"data.dataset_dir: {dataset_dir} does not exist")
    fingerprints = dataset_fingerprints(cfg)
    key = fetch_dataset_key(cfg, fingerprints)
    out = ftflow_home() / "datasets" / key[:16]
    done = reuse(out, key, "fetch_dataset")
    if done is not None:
        return done
    with atomic_dir(out) as tmp:
        report: dict[str, RowStats] = {}
        counts = write_splits(cfg.data, dataset_dir, tmp, data_kind(cfg.train.stage), report)
        if not counts["train"]:
            raise ConfigError(f"data.dataset: {cfg.data.dataset} holds no training rows")
        artifact = Artifact(
            kind="dataset",
            path=str(out),
            # the rows are a pure function of the files and selection hashed into the key
            fingerprint=key,
            metadata={
                "key": key,
                "dataset_dir": str(dataset_dir),
                "datasets": cfg.data.dataset,
                "eval_datasets": cfg.data.eval_dataset,
                "train_fingerprint": fingerprints["train"],
                "eval_fingerprint": fingerprints["eval"],
                "train_rows": counts["train"],
                "eval_rows": counts["eval"],
                # per dataset: rows read, kept, skipped by reason (data.on_error: skip)
                "rows": {name: stats.as_dict() for name, stats in report.items()},
                "skipped_rows": sum(sum(s.skipped.values()) for s in report.values()),
            },
        )
        write_manifest(tmp, artifact)
    log.info("[fetch_dataset] %d train / %d eval rows in %s", counts["train"], counts["eval"], out)
    return artifact
