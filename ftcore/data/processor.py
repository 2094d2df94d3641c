"""Normalized rows -> token ids and labels, one processor per training objective, chosen from a table."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftcore.data.template import Template

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def infer_seqlen(source_len: int, target_len: int, cutoff_len: int) -> tuple[int, int]:
    """LLaMA-Factory's split of a token budget between a turn's prompt and its response.

    A short response is kept whole; else a short prompt is; else both shrink in proportion.
    """
    if target_len * 2 < cutoff_len:
        max_target_len = cutoff_len
    elif source_len * 2 < cutoff_len:
        max_target_len = cutoff_len - source_len
    else:
        max_target_len = int(cutoff_len * (target_len / (source_len + target_len)))
    new_target_len = min(max_target_len, target_len)
    new_source_len = min(max(cutoff_len - new_target_len, 0), source_len)
    return new_source_len, new_target_len


def encode_sft_example(
    pairs: list[tuple[list[int], list[int]]], cutoff_len: int, train_on_prompt: bool
) -> tuple[list[int], list[int], int]:
    """(input_ids, labels, response tokens kept) for one conversation's encoded turns."""
    input_ids: list[int] = []
    labels: list[int] = []
    kept = 0
    for source, target in pairs:
        if len(input_ids) >= cutoff_len:
            break  # later turns do not fit
        source_len, target_len = infer_seqlen(len(source), len(target), cutoff_len - len(input_ids))
        source, target = source[:source_len], target[:target_len]
        input_ids += source + target
        labels += (source if train_on_prompt else [IGNORE_INDEX] * source_len) + target
        kept += target_len
    return input_ids, labels, kept


def preprocess_sft(
    rows: list[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    template: Template,
    cutoff_len: int,
    train_on_prompt: bool = False,
) -> dict[str, list]:
    """Supervised examples: loss on responses only (unless train_on_prompt), truncated to cutoff_len.

    Rows with no response token left within cutoff_len are dropped (tokenize_split counts them).
    """
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for row in rows:
        pairs = template.encode_multiturn(tokenizer, row["messages"], row.get("system"))
        input_ids, labels, kept = encode_sft_example(pairs, cutoff_len, train_on_prompt)
        if kept == 0:
            continue
        out["input_ids"].append(input_ids)
        out["attention_mask"].append([1] * len(input_ids))
        out["labels"].append(labels)
    return out


@dataclass(frozen=True)
class Processor:
    """An objective's rows -> features function, and the Arrow type of each list column it makes (declared,
    so an empty split is still a dataset with columns)."""

    encode: Callable[..., dict[str, list]]
    columns: dict[str, str]

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, list]:
        return self.encode(*args, **kwargs)

    def features(self) -> Any:
        from datasets import Features, List, Value

        return Features({name: List(Value(dtype)) for name, dtype in self.columns.items()})


# Objective (train.stage) -> processor. Later objectives (pt, pairwise, kto) add entries; no if/elif.
PROCESSORS: dict[str, Processor] = {
    "sft": Processor(preprocess_sft, {"input_ids": "int32", "attention_mask": "int8", "labels": "int64"}),
}


def tokenize_split(
    rows: Dataset,
    objective: str,
    tokenizer: PreTrainedTokenizerBase,
    template: Template,
    cutoff_len: int,
    train_on_prompt: bool = False,
    num_proc: int | None = None,
    work_dir: Path | None = None,
    fingerprint: str | None = None,
) -> Dataset:
    """An Arrow dataset of normalized rows -> the objective's features, with `datasets.map` in batches
    and `num_proc` processes; the ids do not depend on num_proc. Its files go to `work_dir` (else
    datasets' cache next to `rows`); `fingerprint` spares datasets hashing the tokenizer."""
    process = PROCESSORS[objective]
    if len(rows) == 0:  # datasets.map would return a dataset without columns
        from datasets import Dataset

        return Dataset.from_dict({name: [] for name in process.columns}, features=process.features())

    def encode(batch: dict[str, list]) -> dict[str, list]:
        batch_rows = [
            {"messages": messages, "system": system}
            for messages, system in zip(batch["messages"], batch["system"], strict=True)
        ]
        return process(batch_rows, tokenizer, template, cutoff_len, train_on_prompt)

    options: dict[str, Any] = {}
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        options["cache_file_name"] = str(Path(work_dir) / "tokenized.arrow")
    workers = num_proc if num_proc and num_proc > 1 and len(rows) > 1 else None
    tokenized = rows.map(
        encode,
        batched=True,
        batch_size=1000,
        num_proc=min(workers, len(rows)) if workers else None,
        remove_columns=rows.column_names,
        features=process.features(),
        load_from_cache_file=False,
        new_fingerprint=fingerprint,
        desc=f"tokenizing {len(rows)} rows",
        **options,
    )
    dropped = len(rows) - len(tokenized)
    if dropped:
        log.warning(
            "dropped %d of %d rows with no response tokens within cutoff_len=%d",
            dropped,
            len(rows),
            cutoff_len,
        )
    return tokenized
