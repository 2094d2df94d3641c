"""The TrainingMethod interface and full-weight tuning, which the other methods refine.

Each method owns how the base model is loaded, how it is prepared for training, which optimizer it
needs and what it saves. The train step only calls these hooks, so a method is one class and one
METHODS entry, never an if/elif on finetuning_type elsewhere.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from ftcore.config.sections import TrainConfig

log = logging.getLogger("ftcore.train")


@dataclass(frozen=True)
class LoadPlan:
    """How the base model is loaded for training."""

    dtype: str = "float32"  # torch dtype name of the loaded weights
    quantization_config: Any = None  # e.g. a BitsAndBytesConfig (qlora)
    device_map: Any = None  # None: the whole model on pick_device()
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # attn_implementation, config, ...


class TrainingMethod(ABC):
    """Base of the methods: full-weight defaults that subclasses override where they differ."""

    name: ClassVar[str]
    artifact_kind: ClassVar[Literal["adapter", "model"]]
    # train.<section>s this method reads; the others are left out of the train step's cache key
    config_sections: ClassVar[frozenset[str]] = frozenset()

    def load_plan(self, cfg: TrainConfig) -> LoadPlan:
        """fp32 master weights; bf16 compute comes from autocast (TrainingArguments.bf16)."""
        return LoadPlan()

    def load(
        self, path: str | Path, cfg: TrainConfig, trust_remote_code: bool = False, head: str = "causal_lm"
    ) -> Any:
        """The base model, loaded as load_plan says (with the speed switches), in training mode;
        head="score" loads a reward model (a one-number score head)."""
        from ftcore.modeling import load_model
        from ftcore.train.methods.speed import check_base_trainable, check_speed, load_kwargs

        check_speed(cfg.speed)
        check_base_trainable(path)
        plan = self.load_plan(cfg)
        model = load_model(
            path,
            trust_remote_code,
            dtype=plan.dtype,
            quantization_config=plan.quantization_config,
            device_map=plan.device_map,
            model_kwargs={**load_kwargs(path, cfg.speed, trust_remote_code), **plan.model_kwargs},
            head=head,
        )
        model.train()
        return model

    @abstractmethod
    def prepare(self, model: Any, cfg: TrainConfig) -> Any:
        """Make the trainable parameters trainable (and wrap the model if the method needs to)."""

    def optimizer_args(self, cfg: TrainConfig, use_cpu: bool) -> dict[str, Any]:
        """TrainingArguments fields that pick the optimizer (GaLore sets optim_target_modules too)."""
        return {"optim": "adamw_torch" if use_cpu else "adamw_torch_fused"}

    def create_optimizer(self, model: Any, args: Any, cfg: TrainConfig) -> Any:
        """An optimizer the Trainer cannot build from optimizer_args (LoRA+, BAdam), or None. Pass it
        as Trainer(optimizers=(this, None))."""
        return None

    @abstractmethod
    def save(self, model: Any, out_dir: Path, base_dtype: Any = None) -> None:
        """Write what this method produces into out_dir (the tokenizer is written by the caller)."""


class FullMethod(TrainingMethod):
    """Every weight trains; the result is a whole model, saved in the base model's own dtype."""

    name = "full"
    artifact_kind = "model"

    def prepare(self, model: Any, cfg: TrainConfig) -> Any:
        for param in model.parameters():
            param.requires_grad_(True)
        log.info("full: %d trainable parameters", sum(p.numel() for p in model.parameters()))
        return model

    def save(self, model: Any, out_dir: Path, base_dtype: Any = None) -> None:
        """fp32 master weights are cast back: a bf16 base gives a bf16 model, not one twice its size."""
        if base_dtype is not None and model.dtype != base_dtype:
            model = model.to(base_dtype)
        model.save_pretrained(out_dir, safe_serialization=True)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(out_dir)


def trainable_names(model: Any) -> set[str]:
    """Names of the parameters that will train (for logs and tests)."""
    return {name for name, param in model.named_parameters() if param.requires_grad}


def is_score_model(model: Any) -> bool:
    """A model with a sequence-score head (AutoModelForSequenceClassification), as the rm stage trains."""
    return type(model).__name__.endswith("ForSequenceClassification")
