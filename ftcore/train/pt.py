"""Continued pre-training (LLaMA-Factory's `stage: pt`): plain causal-LM loss on cutoff_len blocks.

The pt processor (ftcore.data.processor.preprocess_pt) already made the blocks with labels equal to
the input ids, so training is the supervised Trainer path unchanged: the same collator pads (blocks
are all cutoff_len long, so nothing is padded in practice) and every token is trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.train.methods import TrainingMethod
from ftcore.train.sft import run_sft


def run_pt(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    resume_from: Path | None,
    callbacks: list[Any],
    method: TrainingMethod,
) -> dict[str, Any]:
    """Train `model` in place on text blocks; returns the final metrics and the full log history."""
    return run_sft(model, tokenizer, train_dataset, cfg, checkpoint_dir, resume_from, callbacks, method)
