"""Rollouts for PPO: sample responses from the policy, score them with the reward model, and read the
log-probabilities and values PPO needs (policy, reference, value head) in one layout:
left-padded prompt | right-padded response, with a 0/1 mask over the real response tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


class ValueHead(torch.nn.Module):
    """A scalar value per position from the policy's last hidden state (trained beside the policy).
    It starts at zero: random initial values would add per-token noise to every advantage (GAE sums
    value differences), drowning the reward signal until the head has learnt."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.summary.weight)
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


@dataclass
class Rollout:
    """One batch of experience; every (B, R) tensor is aligned with `response`."""

    query: torch.Tensor  # (B, P) prompt ids, left-padded
    query_mask: torch.Tensor  # (B, P)
    response: torch.Tensor  # (B, R) response ids, right-padded
    mask: torch.Tensor  # (B, R) float: 1 on real response tokens (through the first stop token)
    scores: torch.Tensor  # (B,) reward model scores (normalised if asked)
    raw_scores: torch.Tensor  # (B,) reward model scores as given
    logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None
    values: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> Rollout:
        return Rollout(**{k: (v[index] if v is not None else None) for k, v in self.__dict__.items()})


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (length - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids, mask


@contextlib.contextmanager
def reference_of(policy: Any, reference: Any | None) -> Iterator[Any]:
    """The reference model: a separate frozen copy (full), or the policy with its adapter off (LoRA)."""
    if reference is not None:
        yield reference
    else:
        with policy.disable_adapter():
            yield policy


@torch.no_grad()
def generate(policy: Any, prompts: list[list[int]], tokenizer: Any, rl: Any, stop_ids: list[int]) -> Rollout:
    """Sample one response per prompt; the mask ends at (and includes) the first stop token."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    query, query_mask = left_pad(prompts, pad_id)
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    out = policy.generate(
        input_ids=query.to(device),
        attention_mask=query_mask.to(device),
        do_sample=True,
        max_new_tokens=rl.max_new_tokens,
        temperature=rl.temperature,
        top_p=rl.top_p,
        top_k=rl.top_k,  # 0 turns it off (None would mean transformers' default of 50)
        pad_token_id=pad_id,
        eos_token_id=stop_ids,
    ).cpu()
    policy.train(was_training)
    response = out[:, query.shape[1] :]
    is_stop = torch.isin(response, torch.tensor(stop_ids))
    # a position counts when no stop token came strictly before it
    before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    mask = (before == 0).float()
    response = torch.where(mask.bool(), response, torch.full_like(response, pad_id))
    empty = torch.zeros(len(prompts))
    return Rollout(query, query_mask, response, mask, empty, empty)


def forward(
    model: Any, value_head: ValueHead | None, rollout: Rollout, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the response tokens (B, R) under the sampling temperature (the distribution
    they were drawn from) and, with a value head, the values (B, R) of the states they were sampled from."""
    device = next(model.parameters()).device
    input_ids = torch.cat([rollout.query, rollout.response], dim=1).to(device)
    attention = torch.cat([rollout.query_mask, rollout.mask.long()], dim=1).to(device)
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=position_ids,
        output_hidden_states=value_head is not None,
        use_cache=False,
    )
    start, length = rollout.query.shape[1] - 1, rollout.response.shape[1]
    logits = out.logits[:, start : start + length].float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, start + 1 :, None]).squeeze(-1)
    values = None
    if value_head is not None:
        # detached: the value loss trains the head only and never pulls the policy's weights around
        values = value_head(out.hidden_states[-1][:, start : start + length].detach())
    return logprobs, values


@torch.no_grad()
def score(
    reward_model: Any, reward_tokenizer: Any | None, tokenizer: Any, rollout: Rollout, max_length: int
) -> torch.Tensor:
    """The reward model's score of each prompt + response, one sequence at a time (padding never decides
    which token is scored). With reward_tokenizer None (same vocabulary as the policy) the sampled ids
    are scored as they are; otherwise the text is re-tokenized, which may merge tokens differently."""
    scores = []
    device = next(reward_model.parameters()).device
    for query, qmask, response, mask in zip(
        rollout.query, rollout.query_mask, rollout.response, rollout.mask, strict=True
    ):
        ids = query[qmask.bool()].tolist() + response[mask.bool()].tolist()
        if reward_tokenizer is None:
            input_ids = torch.tensor([ids[-max_length:]])
        else:
            text = tokenizer.decode(ids, skip_special_tokens=False)
            encoded = reward_tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)
            input_ids = torch.tensor([encoded["input_ids"]])
        logits = reward_model(
            input_ids=input_ids.to(device), attention_mask=torch.ones_like(input_ids).to(device)
        )
        scores.append(logits.logits[0, 0].float().cpu())
    return torch.stack(scores)
