"""Supervised fine-tuning: prompt-masked next-token loss over templated conversations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.modeling import bf16_supported


def resolve_bf16(cfg: TrainConfig) -> bool:
    """train.bf16, or when unset: on where the hardware does bf16 natively (recent GPUs)."""
    return bf16_supported() if cfg.bf16 is None else cfg.bf16


def training_arguments(cfg: TrainConfig, checkpoint_dir: Path) -> Any:
    """TrainingArguments from the train section, with defaults that work on CPU and GPU alike."""
    import torch
    from transformers import TrainingArguments

    bf16 = resolve_bf16(cfg)
    use_cpu = not torch.cuda.is_available()
    return TrainingArguments(
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
        optim="adamw_torch" if use_cpu else "adamw_torch_fused",
        report_to="none",  # ftflow logs to MLflow itself, through MetricsCallback
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def run_sft(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
) -> dict[str, Any]:
    """Train `model` in place; returns the final metrics and the full log history."""
    from transformers import Trainer
    from transformers.trainer_callback import PrinterCallback

    from ftcore.data.collator import SFTCollator

    trainer = Trainer(
        model=model,
        args=training_arguments(cfg, checkpoint_dir),
        train_dataset=train_dataset,
        data_collator=SFTCollator(pad_token_id=tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # ftflow's ProgressCallback prints instead
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return {
        "metrics": dict(result.metrics),
        "global_step": trainer.state.global_step,
        "log_history": list(trainer.state.log_history),
        "model": trainer.model,
    }
