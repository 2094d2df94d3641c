"""What every stage's Trainer shares: the same callbacks as sft (loss logged at checkpoints, a stop on
a non-finite loss), the method's own optimizer (LoRA+, BAdam), no printer (ftflow's ProgressCallback
prints), and the result the job expects (see OBJECTIVES in ftcore.train)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.train.methods import TrainingMethod


def fit(
    trainer_class: Any,
    model: Any,
    args: Any,
    tokenizer: Any,
    callbacks: list[Any],
    method: TrainingMethod,
    cfg: TrainConfig,
    resume_from: Path | None,
    **trainer_args: Any,
) -> dict[str, Any]:
    """Build `trainer_class` (transformers' Trainer or a TRL trainer) the ftflow way, train `model` in
    place (resuming from a checkpoint when given) and return metrics, log history and the model."""
    from transformers.trainer_callback import PrinterCallback

    from ftcore.train.callbacks import LogAtCheckpoints, StopOnNonFiniteLoss
    from ftcore.train.sft import run_mean_loss

    trainer = trainer_class(
        model=model,
        args=args,
        processing_class=tokenizer,
        callbacks=[LogAtCheckpoints(), StopOnNonFiniteLoss(), *callbacks],
        optimizers=(method.create_optimizer(model, args, cfg), None),
        **trainer_args,
    )
    trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    metrics = dict(result.metrics)
    metrics["train_loss"] = run_mean_loss(trainer.state.log_history, metrics.get("train_loss"))
    trained = trainer.model
    if "ref" in getattr(trained, "peft_config", {}):
        trained.delete_adapter("ref")  # TRL's frozen reference copy: not part of the result
    return {
        "metrics": metrics,
        "global_step": trainer.state.global_step,
        "log_history": list(trainer.state.log_history),
        "model": trained,
    }
