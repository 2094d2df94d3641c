"""Batching: right-pad tokenized examples into tensors (torch is imported on first call)."""

from __future__ import annotations

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
