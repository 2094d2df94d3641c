"""The PPO loop (TRL 1.x has none): per step, sample responses for a buffer of prompts, score them with
the reward model, shape the rewards with the adaptive KL penalty against the reference, estimate
advantages with GAE, then run ppo_epochs of clipped policy + value updates in mini-batches.

Batch sizes follow LLaMA-Factory: a mini-batch is per_device_train_batch_size rollouts, one optimizer
step accumulates gradient_accumulation_steps of them, and a PPO step samples ppo_buffer_size of those.
Checkpoints (policy weights, value head, optimizer, scheduler, KL controller, score moments, log) are
written like the Trainer's, trainer_state.json last, so the train step's resume and pruning apply.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from ftcore.config.sections import TrainConfig
from ftcore.train.methods import TrainingMethod
from ftcore.train.ppo.losses import (
    AdaptiveKLController,
    RunningMoments,
    gae,
    kl_shaped_rewards,
    masked_mean,
    masked_whiten,
    ppo_losses,
)
from ftcore.train.ppo.rollout import Rollout, ValueHead, forward, generate, reference_of, score

log = logging.getLogger("ftcore.train")

POLICY_FILE, VALUE_FILE, STATE_FILE = "policy.safetensors", "value_head.safetensors", "ppo_state.json"


class PPOState:
    """Everything a resume needs besides the files torch writes (optimizer, scheduler)."""

    def __init__(self, rl: Any) -> None:
        self.kl = AdaptiveKLController(rl.ppo_init_kl_coef, rl.ppo_target, rl.ppo_horizon)
        self.moments = RunningMoments()
        self.global_step = 0
        self.log_history: list[dict[str, Any]] = []


def run_ppo(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    method: TrainingMethod,
) -> dict[str, Any]:
    """Train the prepared policy with PPO against train.rl.reward_model; returns metrics and history."""
    from transformers import TrainerControl, TrainerState, get_scheduler

    from ftcore.modeling import load_tokenizer
    from ftcore.train.rewards import load_reward_model
    from ftcore.train.sft import run_mean_loss, training_arguments

    rl = cfg.rl
    policy = without_dropout(model)
    # LoRA: the reference is the base with the adapter off; otherwise a frozen copy taken before training
    reference = (
        None if hasattr(policy, "disable_adapter") else copy.deepcopy(policy).eval().requires_grad_(False)
    )
    device = next(policy.parameters()).device
    value_head = ValueHead(policy.config.get_text_config().hidden_size).to(device)
    reward_model = load_reward_model(rl.reward_model).to(device)
    has_tokenizer = any(
        (Path(rl.reward_model) / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")
    )
    reward_tokenizer = load_tokenizer(rl.reward_model) if has_tokenizer else None
    if reward_tokenizer is not None and reward_tokenizer.get_vocab() == tokenizer.get_vocab():
        reward_tokenizer = None  # the same vocabulary: score the sampled ids, no re-tokenization
    stop_ids = stop_token_ids(tokenizer, policy)

    micro, accum = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    batch_size = micro * accum * rl.ppo_buffer_size
    prompts = [list(ids) for ids in train_dataset["input_ids"]]
    if not prompts:
        from ftcore.errors import DataError

        raise DataError("ppo: the training split has no prompts")
    steps_per_epoch = math.ceil(len(prompts) / batch_size)
    max_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    updates = max_steps * rl.ppo_epochs * rl.ppo_buffer_size

    args = training_arguments(cfg, checkpoint_dir, method)  # what TrainerCallbacks read
    params = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = build_optimizer(method, policy, value_head, args, cfg)
    scheduler = get_scheduler(
        cfg.lr_scheduler_type,
        optimizer,
        num_warmup_steps=int(cfg.warmup_ratio * updates),
        num_training_steps=updates,
    )
    ppo = PPOState(rl)
    if resume_from is not None:
        load_checkpoint(resume_from, policy, value_head, optimizer, scheduler, ppo)

    state = TrainerState(max_steps=max_steps, global_step=ppo.global_step, log_history=ppo.log_history)
    control = TrainerControl()
    for cb in callbacks:
        cb.on_train_begin(args, state, control)
    window: list[dict[str, float]] = []
    while ppo.global_step < max_steps:
        step = ppo.global_step
        torch.manual_seed(cfg.seed + step)  # a resumed run samples what the uninterrupted one would
        batch = batch_prompts(prompts, step, batch_size, cfg.seed)
        stats = ppo_step(
            policy,
            reference,
            value_head,
            reward_model,
            reward_tokenizer,
            tokenizer,
            batch,
            stop_ids,
            cfg,
            ppo,
            optimizer,
            scheduler,
            params,
        )
        ppo.global_step = state.global_step = step + 1
        state.epoch = (step + 1) / steps_per_epoch
        window.append(stats)
        last = ppo.global_step == max_steps
        saving = ppo.global_step % cfg.save_steps == 0 or last
        if ppo.global_step % cfg.logging_steps == 0 or saving:
            logs = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            logs["learning_rate"] = scheduler.get_last_lr()[0]
            window = []
            ppo.log_history.append({**logs, "epoch": state.epoch, "step": ppo.global_step})
            for cb in callbacks:
                cb.on_log(args, state, control, logs=logs)
        if saving:
            save_checkpoint(checkpoint_dir, policy, value_head, optimizer, scheduler, ppo, max_steps, cfg)
            for cb in callbacks:
                cb.on_save(args, state, control)
    for cb in callbacks:
        cb.on_train_end(args, state, control)
    rewards = [e["reward"] for e in ppo.log_history if "reward" in e]
    kls = [e["kl"] for e in ppo.log_history if "kl" in e]
    metrics = {
        "train_loss": run_mean_loss(ppo.log_history, None),
        "reward_first": rewards[0] if rewards else None,
        "reward_last": rewards[-1] if rewards else None,
        "kl_last": kls[-1] if kls else None,  # nats per response against the reference
        "kl_coef": ppo.kl.value,
        "epoch": state.epoch,
    }
    return {
        "metrics": {k: v for k, v in metrics.items() if v is not None},
        "global_step": ppo.global_step,
        "log_history": list(ppo.log_history),
        "model": policy,
    }


def build_optimizer(
    method: TrainingMethod, policy: Any, value_head: ValueHead, args: Any, cfg: TrainConfig
) -> Any:
    """The method's own optimizer for the policy (LoRA+ ...) when it has one, else AdamW; the value head
    joins it as one more parameter group."""
    optimizer = method.create_optimizer(policy, args, cfg)
    head = list(value_head.parameters())
    if optimizer is None:
        trainable = [p for p in policy.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable + head, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if not hasattr(optimizer, "add_param_group"):
        from ftcore.errors import ConfigError

        raise ConfigError(f"train.stage: ppo cannot train the value head beside {method.name}'s optimizer")
    optimizer.add_param_group({"params": head, "lr": cfg.learning_rate, "weight_decay": cfg.weight_decay})
    return optimizer


def without_dropout(model: Any) -> Any:
    """The model with every dropout at p=0: the ratio of new to old log-probabilities must be 1 before
    the first update, or PPO clips noise instead of learning (TRL's PPO does the same)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def stop_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """Where a response ends: the generation config's eos ids, else the tokenizer's eos."""
    found = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = found if isinstance(found, list) else [found] if found is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def batch_prompts(prompts: list[list[int]], step: int, batch_size: int, seed: int) -> list[list[int]]:
    """The prompts of PPO step `step`: consecutive slices of an endless run of seeded epoch permutations."""
    n, perms = len(prompts), {}
    chosen = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch = i // n
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        chosen.append(prompts[perms[epoch][i % n]])
    return chosen


def ppo_step(
    policy: Any,
    reference: Any,
    value_head: ValueHead,
    reward_model: Any,
    reward_tokenizer: Any,
    tokenizer: Any,
    batch: list[list[int]],
    stop_ids: list[int],
    cfg: TrainConfig,
    ppo: PPOState,
    optimizer: Any,
    scheduler: Any,
    params: list[torch.Tensor],
) -> dict[str, float]:
    """One PPO step: experience, then ppo_epochs of mini-batch updates; returns its statistics."""
    rl = cfg.rl
    rollout: Rollout = generate(policy, batch, tokenizer, rl, stop_ids)
    max_length = getattr(reward_model.config, "max_position_embeddings", None) or 4096
    rollout.raw_scores = score(reward_model, reward_tokenizer, tokenizer, rollout, max_length)
    scores = rollout.raw_scores
    if rl.ppo_score_norm:
        ppo.moments.update(scores)
        scores = (scores - ppo.moments.mean) / ppo.moments.std
    rollout.scores = scores
    with torch.no_grad():
        policy.eval()
        rollout.logprobs, rollout.values = forward(policy, value_head, rollout, rl.temperature)
        with reference_of(policy, reference) as ref:
            rollout.ref_logprobs, _ = forward(ref, None, rollout, rl.temperature)
        policy.train()
    device = rollout.logprobs.device
    mask = rollout.mask.to(device)
    rewards, kl = kl_shaped_rewards(
        scores.to(device), rollout.logprobs, rollout.ref_logprobs, mask, ppo.kl.value
    )
    if rl.ppo_whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rollout.values, rewards, mask, rl.ppo_gamma, rl.ppo_lam)

    micro, accum = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    totals: dict[str, float] = {}
    updates = 0
    for _ in range(rl.ppo_epochs):
        order = torch.randperm(len(batch))
        for start in range(0, len(batch), micro * accum):
            chunk = order[start : start + micro * accum]
            parts = [chunk[i : i + micro] for i in range(0, len(chunk), micro)]
            for part in parts:
                sub = rollout.select(part)
                sub_mask = mask[part.to(device)]
                logprobs, values = forward(policy, value_head, sub, rl.temperature)
                pg_loss, vf_loss, stats = ppo_losses(
                    logprobs,
                    sub.logprobs,
                    values,
                    sub.values,
                    advantages[part.to(device)],
                    returns[part.to(device)],
                    sub_mask,
                    rl.ppo_cliprange,
                    rl.ppo_cliprange_value,
                )
                loss = pg_loss + rl.ppo_vf_coef * vf_loss
                (loss / len(parts)).backward()
                for key, value in {"loss": loss.item(), **stats}.items():
                    totals[key] = totals.get(key, 0.0) + value / len(parts)
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            updates += 1
    mean_kl = kl.sum(dim=1).mean().item()
    ppo.kl.update(mean_kl, len(batch))
    result = {key: value / updates for key, value in totals.items()}
    if not math.isfinite(result["loss"]):
        from ftcore.errors import FtflowError

        raise FtflowError(f"ppo: the loss became {result['loss']} at step {ppo.global_step + 1}")
    result.update(
        reward=rollout.raw_scores.mean().item(),
        kl=mean_kl,
        kl_coef=ppo.kl.value,
        response_length=rollout.mask.sum(dim=1).mean().item(),
        advantage_mean=masked_mean(advantages, mask).item(),
    )
    return result


def save_checkpoint(
    checkpoint_dir: Path,
    policy: Any,
    value_head: ValueHead,
    optimizer: Any,
    scheduler: Any,
    ppo: PPOState,
    max_steps: int,
    cfg: TrainConfig,
) -> Path:
    """checkpoint-<step>/, written to a temp folder and renamed; older ones beyond save_total_limit go."""
    from safetensors.torch import save_file

    from ftcore.artifacts import atomic_dir

    final = checkpoint_dir / f"checkpoint-{ppo.global_step}"
    with atomic_dir(final) as tmp:
        trainable = {
            n: p.detach().contiguous().clone() for n, p in policy.named_parameters() if p.requires_grad
        }
        save_file(trainable, str(tmp / POLICY_FILE))
        save_file({k: v.contiguous() for k, v in value_head.state_dict().items()}, str(tmp / VALUE_FILE))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        ppo_state = {
            "kl": ppo.kl.state_dict(),
            "moments": ppo.moments.__dict__,
            "global_step": ppo.global_step,
        }
        (tmp / STATE_FILE).write_text(json.dumps(ppo_state))
        trainer_state = {
            "global_step": ppo.global_step,
            "max_steps": max_steps,
            "log_history": ppo.log_history,
        }
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=1))
    if cfg.save_total_limit:
        from ftcore.train.checkpoints import _CHECKPOINT

        found = sorted(
            (int(m.group(1)), p)
            for p in checkpoint_dir.iterdir()
            if p.is_dir() and (m := _CHECKPOINT.match(p.name))
        )
        for _, old in found[: max(len(found) - cfg.save_total_limit, 0)]:
            shutil.rmtree(old)
    return final


def load_checkpoint(
    path: Path, policy: Any, value_head: ValueHead, optimizer: Any, scheduler: Any, ppo: PPOState
) -> None:
    """Restore a checkpoint written by save_checkpoint into the freshly prepared policy and its state."""
    from safetensors.torch import load_file

    from ftcore.errors import ConfigError

    if not (path / POLICY_FILE).is_file():
        raise ConfigError(f"train.resume_from_checkpoint: {path} is not a ppo checkpoint (no {POLICY_FILE})")
    named = dict(policy.named_parameters())
    for name, tensor in load_file(str(path / POLICY_FILE)).items():
        if name not in named:
            raise ConfigError(f"train.resume_from_checkpoint: {path} holds {name}, which this policy lacks")
        with torch.no_grad():
            named[name].copy_(tensor)
    value_head.load_state_dict(load_file(str(path / VALUE_FILE)))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    saved = json.loads((path / STATE_FILE).read_text())
    ppo.kl.load_state_dict(saved["kl"])
    ppo.moments.__dict__.update(saved["moments"])
    ppo.global_step = saved["global_step"]
    ppo.log_history = json.loads((path / "trainer_state.json").read_text())["log_history"]
    log.info("ppo: resumed from %s at step %d", path, ppo.global_step)
