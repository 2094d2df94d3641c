"""Toy rewards for the RL stage tests: counts of chosen letters or digits in the text.

`count_e` is a user reward function (grpo imports it as `rl_toys:count_e`); `build_reward_model` writes
a real sequence-classification model (safetensors, the policy's tokenizer) whose score IS the count of
marked tokens over the prompt and response (`letters("e")`, `digits`, `word(...)`), built by hand so PPO
climbs a known reward through the same loading path as a trained rm job's full-model output.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

SINK_LOGIT = math.log(1e8)  # position 0 takes all but ~1e-8 of the attention of every later token
SINK_MARK = 1e15  # position 0's embedding size: its own letters vanish under the layer norm


def count_e(completions: list[str], **kwargs: Any) -> list[float]:
    """One point per "e" in the completion."""
    return [float(text.count("e")) for text in completions]


def letters(letter: str) -> Callable[[str], float]:
    """Marks for build_reward_model: how often `letter` occurs in a token."""
    return lambda token: float(token.count(letter))


def word(chosen: str) -> Callable[[str], float]:
    """Marks for build_reward_model: 1 for the token `chosen` (e.g. "Ġmay", byte-level), else 0."""
    return lambda token: float(token == chosen)


def digits(token: str) -> float:
    """Marks for build_reward_model: how many digits a token holds (the prompts of the tests have none)."""
    return float(sum(c.isascii() and c.isdigit() for c in token))


def marked_count(tokenizer: Any, ids: list[int], marks: Callable[[str], float]) -> float:
    """What the toy reward model scores: the marks of the non-special tokens after the first (the
    first token is the attention sink)."""
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(ids[1:])
    return sum(marks(t) for i, t in zip(ids[1:], tokens, strict=True) if i not in special)


def build_reward_model(base: Path, out: Path, marks: Callable[[str], float] | None = None) -> Path:
    """A one-layer GPT2ForSequenceClassification over base's vocabulary whose score is the sum of the
    tokens' marks (default: how often "e" occurs) over the sequence, special tokens and the first token
    not counted, to ~1e-3.

    How: each token embeds its letter count m next to a filler sqrt(K - m^2), so every layer norm sees
    the same variance and stays linear. Position 0 (its position embedding huge) is an attention sink:
    with every other key zero, a later token gives it weight E/(E + n - 1) and every token 1/(E + n - 1),
    E = 1e8, so the attention sums the marks / E; the output projection multiplies by E. The final
    norm and score head read that sum back as the count.
    """
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    marks = marks or letters("e")
    tokenizer = AutoTokenizer.from_pretrained(base)
    dim, k_const, scale_out = 8, 64.0, 1e-4  # dims: filler +-, mark +-, sink +-, count +-
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=4096,
        n_embd=dim,
        n_layer=1,
        n_head=1,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2ForSequenceClassification(config)
    special = set(tokenizer.all_special_ids)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        wte, wpe = model.transformer.wte.weight, model.transformer.wpe.weight
        for token_id, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
            mark = 0.0 if token_id in special else marks(token)
            filler = math.sqrt(k_const - mark**2)
            wte[token_id, :4] = torch.tensor([filler, -filler, mark, -mark])
        wpe[0, 4:6] = torch.tensor([SINK_MARK, -SINK_MARK])
        block = model.transformer.h[0]
        for norm in (block.ln_1, block.ln_2, model.transformer.ln_f):
            norm.weight.fill_(1.0)
        sigma = math.sqrt(k_const / 4 + block.ln_1.eps)  # every non-sink token's norm divisor
        # c_attn (Conv1D: x @ W + b) -> [query | key | value], one head of size `dim`
        q_bias = SINK_LOGIT * math.sqrt(dim) / 2.0  # the sink's normed key is 2 (= SINK/(SINK/2))
        block.attn.c_attn.bias[0] = q_bias
        # key: the sink dimension; value: the mark, un-normed. Each reads a +- pair's difference, which
        # cancels the rounding of the huge sink's mean in the norm
        block.attn.c_attn.weight[4, dim], block.attn.c_attn.weight[5, dim] = 0.5, -0.5
        block.attn.c_attn.weight[2, 2 * dim], block.attn.c_attn.weight[3, 2 * dim] = sigma / 2, -sigma / 2
        # out: the attention's sum of marks / E, times E, into the count dims (scaled down so ln_f
        # stays linear)
        block.attn.c_proj.weight[0, 6] = math.exp(SINK_LOGIT) * scale_out
        block.attn.c_proj.weight[0, 7] = -math.exp(SINK_LOGIT) * scale_out
        model.score.weight[0, 6], model.score.weight[0, 7] = sigma / scale_out / 2, -sigma / scale_out / 2
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
