"""Batching: right-pad tokenized examples into tensors, or lay them end to end in one row without
padding (torch is imported on first call)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftcore.data.processor import IGNORE_INDEX

if TYPE_CHECKING:
    import torch


@dataclass
class SFTCollator:
    """Pads input_ids with pad_token_id, attention_mask with 0 and labels with -100, on the right."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch  # here, so importing ftcore.data stays light

        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, list[list[int]]] = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            ids = list(f["input_ids"])
            pad = length - len(ids)
            mask = list(f.get("attention_mask") or [1] * len(ids))
            labels = list(f.get("labels", ids))
            batch["input_ids"].append(ids + [self.pad_token_id] * pad)
            batch["attention_mask"].append(mask + [0] * pad)
            batch["labels"].append(labels + [IGNORE_INDEX] * pad)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}


@dataclass
class FlatCollator:
    """Padding-free batches: every example of the batch end to end in one row, position_ids restarting
    at each example and cu_seq_lens (its boundaries) for variable-length attention, so no position
    is padding and no example attends to another (ftcore.train.varlen, or flash-attention varlen).

    A feature may already hold several examples (packing): its `position_ids` say where each starts.
    The first label of every example is -100, so no example learns to predict the next one."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        import torch

        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for f in features:
            f_ids = list(f["input_ids"])
            f_pos = list(f["position_ids"]) if "position_ids" in f else list(range(len(f_ids)))
            f_labels = list(f.get("labels", f_ids))
            for i, p in enumerate(f_pos):
                if p == 0:
                    f_labels[i] = IGNORE_INDEX
            ids += f_ids
            labels += f_labels
            positions += f_pos
        position_ids = torch.tensor([positions], dtype=torch.long)
        starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
        cu = torch.tensor(starts, dtype=torch.int32)
        longest = max(e - s for s, e in itertools.pairwise(starts))
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": position_ids,
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu,
            "max_length_q": longest,
            "max_length_k": longest,
        }
