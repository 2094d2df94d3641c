"""Train / eval rows for a job: which rows go where, their fingerprints, and their Arrow copy.

Rows are parsed and validated once, by fetch_dataset (write_splits), into Arrow datasets that later
steps read memory-mapped. Each split has its own fingerprint, computed from the files without
parsing them, so choosing other eval rows changes nothing that depends on the train rows.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ftcore.artifacts import fingerprint_file, hash_json
from ftcore.config.sections import DataConfig
from ftcore.data.loader import RowStats, dataset_entry, dataset_source, iter_rows, load_dataset_info
from ftcore.errors import ConfigError

log = logging.getLogger(__name__)

# Fewer training rows than this after a val_size split earns a warning.
FEW_TRAIN_ROWS = 16
_BATCH_ROWS = 10_000


def row_features() -> Any:
    """The Arrow schema of a normalized row (see ftcore.data.loader)."""
    from datasets import Features, List, Value

    turn = {"role": Value("string"), "content": Value("string")}
    return Features(
        {
            "messages": List(turn),
            "system": Value("string"),
            "tools": Value("string"),
            "chosen": turn,
            "rejected": turn,
            "kto_tag": Value("bool"),
        }
    )


def split_indices(n_rows: int, val_size: float, seed: int) -> tuple[list[int], list[int]] | None:
    """(train indices, eval indices) of a seeded val_size split, each in file order; None: no split.

    Holding out more rows than are left to train on is an error (val_size is the fraction held
    out, not the fraction kept); very few training rows are a warning.
    """
    if val_size <= 0 or n_rows <= 1:
        return None
    n_eval = min(max(1, round(n_rows * val_size)), n_rows - 1)
    n_train = n_rows - n_eval
    if n_train < n_eval:
        raise ConfigError(
            f"data.val_size={val_size} holds out {n_eval} of the {n_rows} rows for evaluation and leaves "
            f"{n_train} to train on; val_size is the fraction held out (e.g. 0.1)"
        )
    if n_train < FEW_TRAIN_ROWS:
        log.warning(
            "data.val_size=%s leaves only %d of %d rows for training (%d held out)",
            val_size,
            n_train,
            n_rows,
            n_eval,
        )
    held = set(random.Random(seed).sample(range(n_rows), n_eval))
    return [i for i in range(n_rows) if i not in held], sorted(held)


def _random_used(cfg: DataConfig, names: list[str], info: dict[str, Any], dataset_dir: Path) -> bool:
    """Whether the seed picks rows: num_samples sampling or interleaving."""
    sampled = any(dataset_entry(dataset_dir, n, info).get("num_samples") for n in names)
    return sampled or (len(names) > 1 and cfg.mix_strategy != "concat")


def build_splits(cfg: DataConfig, dataset_dir: Path, kind: str = "sft") -> dict[str, list[dict[str, Any]]]:
    """{"train": rows, "eval": rows} in memory, validated for data `kind`: exactly the rows
    write_splits saves (it is used to make them)."""
    import datasets

    with tempfile.TemporaryDirectory(prefix="ftflow-splits-") as tmp:
        write_splits(cfg, dataset_dir, Path(tmp), kind)
        return {
            split: datasets.load_from_disk(str(Path(tmp) / split)).to_list() for split in ("train", "eval")
        }


def write_splits(
    cfg: DataConfig,
    dataset_dir: Path,
    out: Path,
    kind: str = "sft",
    report: dict[str, RowStats] | None = None,
) -> dict[str, int]:
    """Parse and validate every row once (for data `kind`); save out/train and out/eval as Arrow
    datasets; row counts. `report` receives each dataset's RowStats (read, kept, skipped by reason).

    Each dataset is read as LLaMA-Factory does (num_samples drawn, then the first max_samples),
    then the datasets are mixed by data.mix_strategy; rows stream into Arrow files in batches, so
    memory holds one batch, not the dataset.
    """
    staging = Path(out) / ".rows"
    staging.mkdir(parents=True, exist_ok=True)
    report = {} if report is None else report
    train = _mixed(cfg.dataset, cfg, dataset_dir, staging / "train", kind, report)
    if cfg.eval_dataset:
        evals = _mixed(cfg.eval_dataset, cfg, dataset_dir, staging / "eval", kind, report)
    else:
        picked = split_indices(len(train), cfg.val_size, cfg.seed)
        if picked is None:
            evals = train.select([])
        else:
            train, evals = train.select(picked[0]), train.select(picked[1])
    counts = {"train": len(train), "eval": len(evals)}
    save_split(train, Path(out) / "train")
    save_split(evals, Path(out) / "eval")
    del train, evals
    shutil.rmtree(staging)
    return counts


def save_split(split: Any, path: Path) -> None:
    """save_to_disk that keeps an empty split loadable (datasets writes no shard for 0 rows)."""
    split.save_to_disk(str(path), num_shards=1 if len(split) == 0 else None)


def _mixed(
    names: list[str], cfg: DataConfig, dataset_dir: Path, folder: Path, kind: str, report: dict[str, RowStats]
) -> Any:
    """The rows of `names`, each read on its own, mixed by cfg.mix_strategy (LLaMA-Factory's
    merge_dataset: concatenate, or interleave seeded with probabilities, stopping when the first
    (under) or the last (over) dataset runs out)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for index, name in enumerate(names):
        stats = report.setdefault(name, RowStats())
        parts.append(_one_dataset(name, cfg, dataset_dir, folder / f"{index}.arrow", kind, stats))
    if len(parts) == 1:
        return parts[0]
    if cfg.mix_strategy == "concat":
        return datasets.concatenate_datasets(parts)
    return datasets.interleave_datasets(
        parts,
        probabilities=cfg.interleave_probs,
        seed=cfg.seed,
        stopping_strategy="first_exhausted" if cfg.mix_strategy == "interleave_under" else "all_exhausted",
    )


def _one_dataset(
    name: str, cfg: DataConfig, dataset_dir: Path, path: Path, kind: str, stats: RowStats
) -> Any:
    import datasets
    import numpy as np
    import pyarrow as pa

    num = dataset_entry(dataset_dir, name).get("num_samples")
    schema = row_features().arrow_schema
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch: list[dict[str, Any]] = []
        limit = None if num else cfg.max_samples  # num_samples draws from all rows first
        for _, row in iter_rows(dataset_dir, name, limit, kind, cfg.on_error, stats):
            batch.append(row)
            if len(batch) >= _BATCH_ROWS:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    rows = datasets.Dataset.from_file(str(path))
    if num and len(rows):
        # LLaMA-Factory: a random permutation, topped up with random repeats past the dataset's size
        rng = np.random.default_rng(cfg.seed)
        picked = rng.permutation(len(rows))[:num]
        if num > len(rows):
            picked = np.concatenate([picked, rng.choice(len(rows), num - len(rows))])
        rows = rows.select(picked.tolist())
        if cfg.max_samples is not None:
            rows = rows.select(range(min(cfg.max_samples, len(rows))))
    return rows


def _sources(names: list[str], dataset_dir: Path, info: dict[str, Any]) -> list[Any]:
    """In order (it is the rows' order): each dataset's name, dataset_info entry and content: its
    files' hashes, or for a hub repo its revision and file names (a snapshot is immutable)."""
    out = []
    for name in names:
        source = dataset_source(dataset_dir, name, info)
        if source.origin == "file":
            content: Any = [[f.name, fingerprint_file(f)] for f in source.files]
        else:
            content = [source.origin, source.repo, source.revision, [f.name for f in source.files]]
        out.append([name, dataset_entry(dataset_dir, name, info), content])
    return out


def split_fingerprints(cfg: DataConfig, dataset_dir: Path, kind: str = "sft") -> dict[str, str]:
    """{"train": fp, "eval": fp}: each split's hash of exactly what its rows depend on (the entries
    and files it reads, max_samples, the data kind they were validated for, the mixing, on_error,
    the seed when it picks rows, and the val_size split when one is made). No row is parsed."""
    info = load_dataset_info(dataset_dir)

    def selection(names: list[str]) -> dict[str, Any]:
        picked: dict[str, Any] = {
            "datasets": _sources(names, dataset_dir, info),
            "max_samples": cfg.max_samples,
            "kind": kind,
        }
        if len(names) > 1 and cfg.mix_strategy != "concat":
            picked["mix"] = [cfg.mix_strategy, cfg.interleave_probs]
        if _random_used(cfg, names, info, dataset_dir):
            picked["seed"] = cfg.seed
        if cfg.on_error != "error":
            picked["on_error"] = cfg.on_error
        return picked

    train = selection(cfg.dataset)
    if cfg.eval_dataset:
        evals = selection(cfg.eval_dataset)
    elif cfg.val_size > 0:
        split = {"val_size": cfg.val_size, "seed": cfg.seed}
        train, evals = {**train, "split": split, "part": "train"}, {**train, "split": split, "part": "eval"}
    else:
        evals = {"empty": True}
    return {"train": hash_json(train), "eval": hash_json(evals)}
