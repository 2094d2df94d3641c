"""GRPO: sample a group of completions per prompt, score them with the configured reward functions and
push the policy towards the completions that beat their group's mean (TRL's GRPOTrainer; generation
with transformers, so it runs on CPU).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.train.methods import TrainingMethod


def prompt_dataset(dataset: Any, tokenizer: Any) -> Any:
    """The "unsupervised" features (templated prompt ids, reference response labels) as the text columns
    GRPOTrainer reads: `prompt` (already templated, so TRL applies no chat template) and `reference`."""

    def decode(batch: dict[str, list]) -> dict[str, list]:
        prompts = [tokenizer.decode(ids, skip_special_tokens=False) for ids in batch["input_ids"]]
        references = [
            tokenizer.decode([t for t in labels if t >= 0], skip_special_tokens=True)
            for labels in batch.get("labels") or [[] for _ in prompts]
        ]
        return {"prompt": prompts, "reference": references}

    return dataset.map(decode, batched=True, remove_columns=dataset.column_names, desc="decoding prompts")


def grpo_config(cfg: TrainConfig, checkpoint_dir: Path, method: TrainingMethod) -> Any:
    """GRPOConfig: the same training arguments as every stage, plus the train.rl rollout settings."""
    from trl import GRPOConfig

    from ftcore.train.sft import training_arguments

    args = training_arguments(cfg, checkpoint_dir, method)
    names = {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
    common = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in names}
    # values the TrainingArguments post-processed come back as enums / objects: pass the originals
    for key in ("lr_scheduler_type", "save_strategy", "logging_strategy", "eval_strategy", "optim"):
        value = getattr(args, key, None)
        if value is not None and hasattr(value, "value"):
            common[key] = value.value
    rl = cfg.rl
    return GRPOConfig(
        **{
            **common,
            "num_generations": rl.num_generations,
            "max_completion_length": rl.max_new_tokens,
            "temperature": rl.temperature,
            "top_p": rl.top_p,
            "top_k": rl.top_k,
            "beta": rl.grpo_beta,
            "epsilon": rl.grpo_epsilon,
            "reward_weights": rl.reward_weights,
            "remove_unused_columns": False,  # reward functions read the reference column
            "log_completions": False,
        }
    )


def run_grpo(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    method: TrainingMethod,
) -> dict[str, Any]:
    """Train `model` (already prepared by the method: a LoRA's reference is the adapter disabled) with
    GRPO; returns the metrics, with `reward` = the mean reward of the last logged steps."""
    from trl import GRPOTrainer

    from ftcore.train.rewards import reward_funcs
    from ftcore.train.trainers import fit

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = grpo_config(cfg, checkpoint_dir, method)
    result = fit(
        GRPOTrainer,
        model,
        args,
        tokenizer,
        callbacks,
        method,
        cfg,
        resume_from,
        reward_funcs=reward_funcs(cfg.rl),
        train_dataset=prompt_dataset(train_dataset, tokenizer),
    )
    rewards = [entry["reward"] for entry in result["log_history"] if "reward" in entry]
    if rewards:
        result["metrics"]["reward_first"], result["metrics"]["reward_last"] = rewards[0], rewards[-1]
    return result
