"""Train / eval rows for a job, and the fingerprint that keys the preprocess cache."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from ftcore.artifacts import fingerprint_file, hash_json
from ftcore.config.sections import DataConfig
from ftcore.data.loader import dataset_entry, dataset_files, load_dataset_info, load_rows


def _load_all(names: list[str], dataset_dir: Path, max_samples: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in names:
        rows += load_rows(dataset_dir, name, max_samples)
    return rows


def build_splits(cfg: DataConfig, dataset_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """{"train": rows, "eval": rows}: eval from cfg.eval_dataset, else a seeded val_size split, else empty.

    A val_size split keeps both parts in file order, so it only depends on the data and the seed.
    """
    train = _load_all(cfg.dataset, dataset_dir, cfg.max_samples)
    if cfg.eval_dataset:
        return {"train": train, "eval": _load_all(cfg.eval_dataset, dataset_dir, cfg.max_samples)}
    if cfg.val_size > 0 and len(train) > 1:
        n_eval = min(max(1, round(len(train) * cfg.val_size)), len(train) - 1)
        held = set(random.Random(cfg.seed).sample(range(len(train)), n_eval))
        return {
            "train": [row for i, row in enumerate(train) if i not in held],
            "eval": [row for i, row in enumerate(train) if i in held],
        }
    return {"train": train, "eval": []}


def data_fingerprint(cfg: DataConfig, dataset_dir: Path) -> str:
    """Hash of what the rows depend on: the dataset_info entries used, their files' contents and the
    selection settings (names, max_samples, val_size, seed). Cheap: no row is parsed."""
    info = load_dataset_info(dataset_dir)
    datasets = {}
    for name in dict.fromkeys([*cfg.dataset, *cfg.eval_dataset]):
        files = dataset_files(dataset_dir, name, info)
        datasets[name] = {
            "entry": dataset_entry(dataset_dir, name, info),
            "files": [[f.name, fingerprint_file(f)] for f in files],
        }
    selection = cfg.model_dump(include={"dataset", "eval_dataset", "max_samples", "val_size", "seed"})
    return hash_json({"datasets": datasets, "selection": selection})
