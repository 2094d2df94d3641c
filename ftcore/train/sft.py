"""Supervised fine-tuning: prompt-masked next-token loss over templated conversations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.modeling import bf16_supported, cpu_bf16_native, pick_device
from ftcore.train.methods import TrainingMethod
from ftcore.train.trackers import trainer_integrations

log = logging.getLogger(__name__)
_warned_cpu_bf16: list[bool] = []  # the emulated-bf16 warning once per process, not per call


def resolve_bf16(cfg: TrainConfig) -> bool:
    """train.bf16, or when unset: on where the hardware does bf16 natively (recent GPUs)."""
    if cfg.bf16 and not _warned_cpu_bf16 and pick_device() == "cpu" and not cpu_bf16_native():
        _warned_cpu_bf16.append(True)
        log.warning(
            "train.bf16 is on, but this CPU has no bf16 instructions (AVX512-BF16 / AMX): torch emulates "
            "bf16 matmuls, several times slower than fp32; leave train.bf16 unset for fp32"
        )
    return bf16_supported() if cfg.bf16 is None else cfg.bf16


def training_arguments(cfg: TrainConfig, checkpoint_dir: Path, method: TrainingMethod) -> Any:
    """TrainingArguments from the train section, with defaults that work on CPU and GPU alike; the
    method picks the optimizer."""
    from transformers import TrainingArguments

    return TrainingArguments(**training_argument_values(cfg, checkpoint_dir, method))


def training_argument_values(
    cfg: TrainConfig, checkpoint_dir: Path, method: TrainingMethod
) -> dict[str, Any]:
    """The TrainingArguments fields as a dict, so TRL's configs (its subclasses) take the same values."""
    import torch

    from ftcore.train.distributed import training_args as distributed_args
    from ftcore.train.methods.speed import training_args as speed_args

    bf16 = resolve_bf16(cfg)
    use_cpu = not torch.cuda.is_available()
    return dict(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=bf16,
        fp16=cfg.fp16,
        use_cpu=use_cpu,
        # MLflow is ftflow's own tracking (MetricsCallback); tensorboard / wandb / swanlab are the
        # Trainer's integrations, pointed at the run's folder by ftcore.train.trackers
        report_to=trainer_integrations(cfg.report_to),
        include_num_input_tokens_seen="non_padding",  # tokens/s in the progress records
        logging_nan_inf_filter=False,  # a NaN loss must show, so StopOnNonFiniteLoss can stop the run
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **method.optimizer_args(cfg, use_cpu),
        **speed_args(cfg.speed),
        **distributed_args(cfg, use_cpu),  # many processes: gloo on CPU, DeepSpeed / FSDP
    )


def run_sft(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    method: TrainingMethod,
) -> dict[str, Any]:
    """Train `model` in place; returns the final metrics and the full log history."""
    from transformers import Trainer

    from ftcore.train.trainers import fit

    args = training_arguments(cfg, checkpoint_dir, method)
    train_dataset, collator = batching(model, tokenizer, train_dataset, cfg)
    checkpointing = checkpointing_for(model, train_dataset, cfg)
    args.gradient_checkpointing = checkpointing
    if hasattr(args, "activation_checkpointing"):  # transformers >= 5.2x: the name the Trainer reads
        args.activation_checkpointing = checkpointing
    trainer_class = Trainer
    if cfg.speed.fused_loss:
        from ftcore.train.fused_loss import with_fused_loss

        trainer_class = with_fused_loss(Trainer)
    result = fit(
        trainer_class,
        model,
        args,
        tokenizer,
        callbacks,
        method,
        cfg,
        resume_from,
        train_dataset=train_dataset,
        data_collator=collator,
    )
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == "ftflow_varlen":
        model.set_attn_implementation("sdpa")  # the trained model is used (evaluated, saved) as loaded
    return result


def batching(model: Any, tokenizer: Any, train_dataset: Any, cfg: TrainConfig) -> tuple[Any, Any]:
    """(dataset, collator) of the speed switches: packed rows (packing / neat_packing, sft), and
    padding-free rows with variable-length attention (padding_free) or right padding to a multiple
    of 8."""
    from ftcore.data.collator import FlatCollator, SFTCollator
    from ftcore.data.packing import pack_dataset

    speed = cfg.speed
    if (speed.packing or speed.neat_packing) and cfg.stage == "sft" and len(train_dataset):
        capacity = speed.packing_len or max(len(x) for x in train_dataset["input_ids"])
        train_dataset = pack_dataset(train_dataset, capacity, neat=speed.neat_packing)
    if speed.padding_free or speed.neat_packing:
        use_varlen_attention(model)
        return train_dataset, FlatCollator()
    return train_dataset, SFTCollator(pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=8)


def use_varlen_attention(model: Any) -> None:
    """Switch an sdpa model to ftflow's variable-length attention (same math, per example); flash
    attention already reads packed rows, eager gets transformers' block mask."""
    from ftcore.train import varlen

    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(varlen.register())


def checkpointing_for(model: Any, train_dataset: Any, cfg: TrainConfig) -> bool:
    """Gradient checkpointing for this run: as set, or by the activation estimate of the largest batch
    (train.speed.gradient_checkpointing auto)."""
    from ftcore.train.methods.speed import checkpointing_by_estimate

    if hasattr(train_dataset, "longest"):  # a stream (data.streaming): measured without reading it all
        longest = train_dataset.longest()
    else:
        longest = max((len(x) for x in train_dataset["input_ids"]), default=0) if len(train_dataset) else 0
    tokens = longest * cfg.per_device_train_batch_size
    bytes_per_value = 2 if resolve_bf16(cfg) or cfg.fp16 else 4
    config = getattr(model, "config", None)
    return checkpointing_by_estimate(cfg.speed, config, tokens, bytes_per_value)


def run_mean_loss(log_history: list[dict[str, Any]], fallback: float | None) -> float | None:
    """Mean loss over every step of the run, resumed or not (the Trainer's own train_loss covers only
    the steps since the last resume). Each logged loss is the mean over the steps since the last log."""
    total, steps, last = 0.0, 0, 0
    for entry in log_history:
        if "loss" in entry and entry.get("step", 0) > last:
            total += entry["loss"] * (entry["step"] - last)
            steps += entry["step"] - last
            last = entry["step"]
    return total / steps if steps else fallback
