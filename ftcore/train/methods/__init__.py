"""Fine-tuning methods as objects (see base.TrainingMethod): the train step asks method_for(cfg) and
calls its hooks; it never branches on finetuning_type.

Import what you need from here: TrainingMethod, LoadPlan, METHODS, method_for, method_name,
unused_sections, lora_targets.
"""

from __future__ import annotations

from ftcore.config.pipeline import PipelineConfig
from ftcore.config.sections import TrainConfig
from ftcore.train.methods.base import FullMethod, LoadPlan, TrainingMethod, is_score_model, trainable_names
from ftcore.train.methods.freeze import FreezeMethod
from ftcore.train.methods.lora import LoraMethod, QLoraMethod, lora_targets
from ftcore.train.methods.optimizers import ApolloMethod, BadamMethod, GaloreMethod

# one stateless instance per method (a continued adapter gets its own instance from method_for)
METHODS: dict[str, TrainingMethod] = {
    cls.name: cls()
    for cls in (LoraMethod, QLoraMethod, FreezeMethod, FullMethod, GaloreMethod, ApolloMethod, BadamMethod)
}
# every train sub-section that belongs to some method (the rest, like speed, matter to all)
METHOD_SECTIONS = frozenset().union(*(cls.config_sections for cls in METHODS.values()))


def method_name(train: TrainConfig) -> str:
    """The METHODS entry of a train section: finetuning_type refined by quantization / optimizer."""
    if train.finetuning_type == "lora":
        return "qlora" if train.quantization.bit else "lora"
    optimizer = [name for name in ("galore", "apollo", "badam") if getattr(train, name).enabled]
    return optimizer[0] if optimizer else train.finetuning_type


def method_for(cfg: PipelineConfig) -> TrainingMethod:
    """The method instance a job trains with (an adapter to continue comes from model.*)."""
    method = METHODS[method_name(cfg.train)]
    if isinstance(method, LoraMethod) and cfg.train.lora.train_adapter and cfg.model.adapter_name_or_path:
        from ftcore.outputs import resolve_adapter_dir

        return type(method)(resolve_adapter_dir(cfg.model.adapter_name_or_path))
    return method


def unused_sections(train: TrainConfig) -> set[str]:
    """train sub-sections the chosen method never reads: left out of the train cache key."""
    return set(METHOD_SECTIONS - METHODS[method_name(train)].config_sections)


__all__ = [
    "METHODS",
    "LoadPlan",
    "TrainingMethod",
    "is_score_model",
    "lora_targets",
    "method_for",
    "method_name",
    "trainable_names",
    "unused_sections",
]
