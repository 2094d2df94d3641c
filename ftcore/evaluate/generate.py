"""Generation for held-out prompts, batched with left padding: greedy by default, or the sampling /
beam settings of the eval section, seeded so a sampled evaluation is repeatable."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any


def generation_options(eval_cfg: Any) -> dict[str, Any]:
    """The `generate` keyword arguments an EvalConfig asks for; sampling settings only when sampling
    (greedy decoding ignores them, and transformers warns about them)."""
    options: dict[str, Any] = {
        "do_sample": eval_cfg.do_sample,
        "num_beams": eval_cfg.num_beams,
        "repetition_penalty": eval_cfg.repetition_penalty,
    }
    if eval_cfg.do_sample:
        options.update(temperature=eval_cfg.temperature, top_p=eval_cfg.top_p, top_k=eval_cfg.top_k)
    return options


def generate_answers(
    model: Any,
    tokenizer: Any,
    template: Any,
    rows: list[dict],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
    options: Mapping[str, Any] | None = None,
    seed: int | None = None,
) -> list[str]:
    """The model's answer to each row's last user turn (history and system prompt included).

    `batch_size` prompts are generated at once; `progress(done, total)` is called after each batch.
    `options` are `generate` arguments (see generation_options; default greedy); with `seed`, sampling
    starts from that seed without moving the caller's random state.
    """
    import torch

    options = dict(options or {"do_sample": False})
    answers: list[str] = []
    with torch.random.fork_rng() if seed is not None else contextlib.nullcontext():
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            answers.extend(_generate_batch(model, tokenizer, template, chunk, max_new_tokens, options))
            if progress is not None:
                progress(len(answers), len(rows))
    return answers


def _generate_batch(
    model: Any, tokenizer: Any, template: Any, chunk: list[dict], max_new_tokens: int, options: dict
) -> list[str]:
    """One left-padded batch; each answer cut at the template's first stop token."""
    import torch

    device = next(model.parameters()).device
    stop_ids = template.stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    prompts = [
        template.encode_prompt(tokenizer, row["messages"][:-1], row.get("system"), row.get("tools"))
        for row in chunk
    ]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            max_new_tokens=max_new_tokens,
            eos_token_id=stop_ids or None,
            pad_token_id=pad,
            **options,
        )
    answers = []
    for row_ids in out[:, width:].tolist():
        kept = []
        for token in row_ids:
            if token in stop_ids or token == pad:
                break
            kept.append(token)
        answers.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return answers
