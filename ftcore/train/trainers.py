"""What every stage's Trainer shares: its callbacks and optimizer from the method, no printer (ftflow's
ProgressCallback prints), and the result the job expects (see OBJECTIVES in ftcore.train)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_and_collect(trainer: Any, resume_from: Path | None) -> dict[str, Any]:
    """Train, then return what the job expects (see OBJECTIVES in ftcore.train)."""
    from ftcore.train.sft import run_mean_loss

    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    metrics = dict(result.metrics)
    metrics["train_loss"] = run_mean_loss(trainer.state.log_history, metrics.get("train_loss"))
    model = trainer.model
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")  # TRL's frozen reference copy: not part of the result
    return {
        "metrics": metrics,
        "global_step": trainer.state.global_step,
        "log_history": list(trainer.state.log_history),
        "model": model,
    }


def trainer_kwargs(tokenizer: Any, callbacks: list[Any], optimizer: Any = None) -> dict[str, Any]:
    """What every stage's trainer takes beside model, args and data: the same callbacks as sft (loss
    logged at checkpoints, a stop on a non-finite loss) and the method's own optimizer (LoRA+, BAdam)."""
    from ftcore.train.callbacks import LogAtCheckpoints, StopOnNonFiniteLoss

    return {
        "processing_class": tokenizer,
        "callbacks": [LogAtCheckpoints(), StopOnNonFiniteLoss(), *callbacks],
        "optimizers": (optimizer, None),
    }


def without_printer(trainer: Any) -> Any:
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # ftflow's ProgressCallback prints instead
    return trainer
