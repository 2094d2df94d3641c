"""Freeze tuning: only the top (+N) or bottom (-N) hidden layers train, optionally only some of their
modules, plus extra modules outside the layers. The result is a whole model, saved like full tuning."""

from __future__ import annotations

import logging
import re
from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.errors import ConfigError
from ftcore.train.methods.base import FullMethod, is_score_model

log = logging.getLogger("ftcore.train")

_LAYER = re.compile(r"\.(\d+)\.")  # the layer index inside a parameter name: model.layers.3.mlp...


def _layer_count(model: Any) -> int:
    config = getattr(model, "config", None)
    text = getattr(config, "get_text_config", lambda: config)()
    count = getattr(text, "num_hidden_layers", None) or getattr(text, "num_layers", None)
    if not count:
        raise ConfigError("train.finetuning_type=freeze: the model's config names no num_hidden_layers")
    return int(count)


def freeze_plan(model: Any, cfg: TrainConfig) -> set[str]:
    """Names of the parameters freeze tuning trains, as LLaMA-Factory picks them (checked names)."""
    freeze = cfg.freeze
    layers = _layer_count(model)
    n = freeze.trainable_layers
    ids = range(max(0, layers - n), layers) if n > 0 else range(min(-n, layers))
    in_layers: dict[str, set[str]] = {}  # module name right after the layer index -> parameter names
    outside: dict[str, set[str]] = {}  # each path component of the non-layer parameters -> names
    for name, _ in model.named_parameters():
        match = _LAYER.search(name)
        if match:
            module = name[match.end() :].split(".")[0]
            if int(match.group(1)) in ids:
                in_layers.setdefault(module, set()).add(name)
                in_layers.setdefault("all", set()).add(name)
            else:
                in_layers.setdefault(module, set())
        else:
            for part in name.split(".")[:-1]:
                outside.setdefault(part, set()).add(name)
    chosen: set[str] = set()
    for module in freeze.trainable_modules:
        if module not in in_layers:
            known = ", ".join(sorted(m for m in in_layers if m != "all"))
            raise ConfigError(
                f"train.freeze.trainable_modules: {module} is not in the layers ({known}, or all)"
            )
        chosen |= in_layers[module]
    for module in freeze.extra_modules:
        if module not in outside:
            known = ", ".join(sorted(m for m in outside if m != "model"))
            raise ConfigError(f"train.freeze.extra_modules: {module} is not outside the layers ({known})")
        chosen |= outside[module]
    return chosen


class FreezeMethod(FullMethod):
    name = "freeze"
    artifact_kind = "model"
    config_sections = frozenset({"freeze"})

    def prepare(self, model: Any, cfg: TrainConfig) -> Any:
        chosen = freeze_plan(model, cfg)
        for name, param in model.named_parameters():
            # a reward model's score head is new: it always trains
            param.requires_grad_(name in chosen or (is_score_model(model) and name.startswith("score.")))
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("freeze: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
        return model
