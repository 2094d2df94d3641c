"""Toy rewards for the RL stage tests: the reward is how often the letter "e" appears in a completion.

`count_e` is a user reward function (grpo imports it as `rl_toys:count_e`); `build_reward_model` writes
a real one-layer sequence-classification model (safetensors) whose score grows with the share of
tokens containing "e" — built by hand, so PPO has a reward MODEL to climb without an rm job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def count_e(completions: list[str], **kwargs: Any) -> list[float]:
    """One point per "e" in the completion."""
    return [float(text.count("e")) for text in completions]


def build_reward_model(base: Path, out: Path, letter: str = "e") -> Path:
    """A Qwen2ForSequenceClassification with base's tokenizer: each token's embedding carries how often
    `letter` occurs in it, attention with zero queries averages that over the sequence, and the score
    head reads the average (times 10) through the final norm: it grows with the letter's density."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(base)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=4,
        intermediate_size=4,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        head_dim=4,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = Qwen2ForSequenceClassification(config)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.model.embed_tokens.weight[:, 0] = 10.0  # a constant that keeps the norms (nearly) linear
        for token_id in range(len(tokenizer)):  # the mark: how often the letter is in the token
            token = tokenizer.convert_ids_to_tokens(token_id)
            model.model.embed_tokens.weight[token_id, 1] = token.count(letter)
        layer = model.model.layers[0]
        layer.input_layernorm.weight.fill_(1.0)
        layer.post_attention_layernorm.weight.fill_(1.0)
        layer.self_attn.v_proj.weight[0, 1] = 1.0  # value: the mark
        layer.self_attn.o_proj.weight[2, 0] = 1.0  # the averaged mark lands in dimension 2
        model.model.norm.weight.fill_(1.0)
        model.score.weight[0, 2] = 10.0
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
