"""The arithmetic of PPO for language models: KL-shaped rewards, GAE, clipped policy and value losses,
and the adaptive KL controller (Ziegler et al. 2019), as LLaMA-Factory's PPO (TRL 0.x) computed them.
All tensors are (batch, response_length) with a 0/1 `mask` over the real response tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass
class AdaptiveKLController:
    """Moves the KL coefficient so the policy's KL to the reference tracks `target` over `horizon`
    samples; a fixed coefficient when adaptive is off."""

    value: float
    target: float
    horizon: float
    adaptive: bool = True

    def update(self, current_kl: float, n_steps: int) -> None:
        if not self.adaptive:
            return
        error = max(-0.2, min(0.2, current_kl / self.target - 1))
        self.value *= 1 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class RunningMoments:
    """Running mean / std of the reward model's scores (ppo_score_norm), kept across resumes."""

    mean: float = 0.0
    var: float = 1.0
    count: float = 1e-24

    def update(self, xs: torch.Tensor) -> None:
        batch_mean, batch_var, n = xs.mean().item(), xs.var(unbiased=False).item(), xs.numel()
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 1e-12))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (the mean kept when shift_mean is False)."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def kl_shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token reward: -kl_coef x (logp - ref_logp), plus the sequence's score on its last token.
    Returns (rewards, per-token kl)."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def gae(
    values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the response; returns (whitened advantages, returns)."""
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    returns = advantages + values
    return masked_whiten(advantages, mask) * mask, returns


def ppo_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Clipped surrogate policy loss and clipped value loss, each a masked mean; plus diagnostics."""
    ratio = torch.exp(logprobs - old_logprobs)
    pg_losses = -advantages * ratio
    pg_clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_clipped), mask)
    values_clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    vf_loss = 0.5 * masked_mean(torch.max((values - returns) ** 2, (values_clipped - returns) ** 2), mask)
    stats = {
        "policy_loss": pg_loss.item(),
        "value_loss": vf_loss.item(),
        "clipfrac": masked_mean((pg_clipped > pg_losses).float(), mask).item(),
        "approx_kl": (0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)).item(),
    }
    return pg_loss, vf_loss, stats
