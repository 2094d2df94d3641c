"""Fine-tuning methods: how a loaded model is prepared for training. One entry per method."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ftcore.config.sections import TrainConfig

log = logging.getLogger(__name__)


def prepare_lora(model: Any, cfg: TrainConfig) -> Any:
    """Wrap the model with a fresh LoRA adapter; the base weights stay frozen."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = cfg.lora.target
    target_modules: Any = "all-linear" if targets == ["all"] else targets
    peft_cfg = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=cfg.lora.rank,
        lora_alpha=cfg.lora.alpha or 2 * cfg.lora.rank,
        lora_dropout=cfg.lora.dropout,
        target_modules=target_modules,
    )
    model = get_peft_model(model, peft_cfg)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("lora: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
    return model


def prepare_full(model: Any, cfg: TrainConfig) -> Any:
    """Train every weight."""
    for param in model.parameters():
        param.requires_grad_(True)
    log.info("full: %d trainable parameters", sum(p.numel() for p in model.parameters()))
    return model


METHODS: dict[str, Callable[[Any, TrainConfig], Any]] = {"lora": prepare_lora, "full": prepare_full}
