"""Held-out loss and perplexity: the same masked token loss training optimizes, averaged per token."""

from __future__ import annotations

import math
from typing import Any


def eval_loss(model: Any, dataset: Any, pad_token_id: int, batch_size: int = 8) -> dict[str, float]:
    """Token-weighted mean loss over `dataset` (input_ids / labels) and its perplexity."""
    import torch

    from ftcore.data.collator import SFTCollator

    collate = SFTCollator(pad_token_id=pad_token_id)
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = {k: v.to(device) for k, v in collate(rows).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            shift_logits = logits[:, :-1].float()
            shift_labels = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                shift_logits.reshape(-1, shift_logits.size(-1)),
                shift_labels.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total_loss += losses.item()
            total_tokens += int((shift_labels != -100).sum())
    if total_tokens == 0:
        return {}
    loss = total_loss / total_tokens
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "eval_tokens": float(total_tokens)}
