"""Greedy generation for held-out prompts, batched with left padding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def generate_answers(
    model: Any,
    tokenizer: Any,
    template: Any,
    rows: list[dict],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """The model's answer to each row's last user turn (history and system prompt included).

    `batch_size` prompts are generated at once; `progress(done, total)` is called after each batch.
    """
    import torch

    device = next(model.parameters()).device
    stop_ids = template.stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompts = [
            template.encode_prompt(tokenizer, row["messages"][:-1], row.get("system")) for row in chunk
        ]
        width = max(map(len, prompts))
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stop_ids or None,
                pad_token_id=pad,
            )
        for row_ids in out[:, width:].tolist():
            kept = []
            for token in row_ids:
                if token in stop_ids or token == pad:
                    break
                kept.append(token)
            answers.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
        if progress is not None:
            progress(len(answers), len(rows))
    return answers
