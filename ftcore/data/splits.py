"""Train / eval rows for a job: which rows go where, their fingerprints, and their Arrow copy.

Rows are parsed and validated once, by fetch_dataset (write_splits), into Arrow datasets that later
steps read memory-mapped. Each split has its own fingerprint, computed from the files without
parsing them, so choosing other eval rows changes nothing that depends on the train rows.
"""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path
from typing import Any

from ftcore.artifacts import fingerprint_file, hash_json
from ftcore.config.sections import DataConfig
from ftcore.data.loader import dataset_entry, dataset_files, iter_rows, load_dataset_info
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


def _load_all(
    names: list[str], dataset_dir: Path, max_samples: int | None, kind: str
) -> list[dict[str, Any]]:
    return [row for name in names for _, row in iter_rows(dataset_dir, name, max_samples, kind)]


def build_splits(cfg: DataConfig, dataset_dir: Path, kind: str = "sft") -> dict[str, list[dict[str, Any]]]:
    """{"train": rows, "eval": rows} in memory, validated for data `kind`: eval from
    cfg.eval_dataset, else a seeded val_size split, else empty. write_splits makes the same rows as
    Arrow datasets."""
    train = _load_all(cfg.dataset, dataset_dir, cfg.max_samples, kind)
    if cfg.eval_dataset:
        return {"train": train, "eval": _load_all(cfg.eval_dataset, dataset_dir, cfg.max_samples, kind)}
    picked = split_indices(len(train), cfg.val_size, cfg.seed)
    if picked is None:
        return {"train": train, "eval": []}
    return {"train": [train[i] for i in picked[0]], "eval": [train[i] for i in picked[1]]}


def write_splits(cfg: DataConfig, dataset_dir: Path, out: Path, kind: str = "sft") -> dict[str, int]:
    """Parse and validate every row once (for data `kind`); save out/train and out/eval as Arrow
    datasets; row counts.

    Rows stream into an Arrow file in batches, so memory holds one batch, not the dataset.
    """
    staging = Path(out) / ".rows"
    staging.mkdir(parents=True, exist_ok=True)
    train = _write_rows(cfg.dataset, dataset_dir, cfg.max_samples, staging / "train.arrow", kind)
    if cfg.eval_dataset:
        evals = _write_rows(cfg.eval_dataset, dataset_dir, cfg.max_samples, staging / "eval.arrow", kind)
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


def _write_rows(names: list[str], dataset_dir: Path, max_samples: int | None, path: Path, kind: str) -> Any:
    import datasets
    import pyarrow as pa

    schema = row_features().arrow_schema
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch: list[dict[str, Any]] = []
        for name in names:
            for _, row in iter_rows(dataset_dir, name, max_samples, kind):
                batch.append(row)
                if len(batch) >= _BATCH_ROWS:
                    writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                    batch = []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    return datasets.Dataset.from_file(str(path))


def _sources(names: list[str], dataset_dir: Path, info: dict[str, Any]) -> list[Any]:
    """In order (it is the rows' order): each dataset's name, dataset_info entry and files' hashes."""
    return [
        [
            name,
            dataset_entry(dataset_dir, name, info),
            [[f.name, fingerprint_file(f)] for f in dataset_files(dataset_dir, name, info)],
        ]
        for name in names
    ]


def split_fingerprints(cfg: DataConfig, dataset_dir: Path, kind: str = "sft") -> dict[str, str]:
    """{"train": fp, "eval": fp}: each split's hash of exactly what its rows depend on (the entries
    and files it reads, max_samples, the data kind they were validated for, and the val_size split
    when one is made). No row is parsed."""
    info = load_dataset_info(dataset_dir)
    train = {"datasets": _sources(cfg.dataset, dataset_dir, info), "max_samples": cfg.max_samples}
    train["kind"] = kind
    if cfg.eval_dataset:
        evals: dict[str, Any] = {
            "datasets": _sources(cfg.eval_dataset, dataset_dir, info),
            "max_samples": cfg.max_samples,
            "kind": kind,
        }
    elif cfg.val_size > 0:
        split = {"val_size": cfg.val_size, "seed": cfg.seed}
        train, evals = {**train, "split": split, "part": "train"}, {**train, "split": split, "part": "eval"}
    else:
        evals = {"empty": True}
    return {"train": hash_json(train), "eval": hash_json(evals)}
