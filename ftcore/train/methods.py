"""Fine-tuning methods as objects: each owns how the base model is loaded, how it is prepared for
training, which optimizer it needs and what it saves. The train step only calls these hooks, so a new
method (dora, qlora, freeze, galore) is one class and one METHODS entry, never an if/elif elsewhere.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from ftcore.config.sections import TrainConfig
from ftcore.errors import ConfigError

log = logging.getLogger("ftcore.train")


@dataclass(frozen=True)
class LoadPlan:
    """How the base model is loaded for training."""

    dtype: str = "float32"  # torch dtype name of the loaded weights
    quantization_config: Any = None  # e.g. a BitsAndBytesConfig (qlora)
    device_map: Any = None  # None: the whole model on pick_device()


class TrainingMethod(ABC):
    """Base of the methods: full-weight defaults that subclasses override where they differ."""

    name: ClassVar[str]
    artifact_kind: ClassVar[Literal["adapter", "model"]]

    def load_plan(self, cfg: TrainConfig) -> LoadPlan:
        """fp32 master weights; bf16 compute comes from autocast (TrainingArguments.bf16)."""
        return LoadPlan()

    def load(
        self, path: str | Path, cfg: TrainConfig, trust_remote_code: bool = False, head: str = "causal_lm"
    ) -> Any:
        """The base model, loaded as load_plan says, in training mode; head="score" for a reward model."""
        from ftcore.modeling import load_model

        plan = self.load_plan(cfg)
        model = load_model(
            path,
            trust_remote_code,
            dtype=plan.dtype,
            quantization_config=plan.quantization_config,
            device_map=plan.device_map,
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

    @abstractmethod
    def save(self, model: Any, out_dir: Path, base_dtype: Any = None) -> None:
        """Write what this method produces into out_dir (the tokenizer is written by the caller)."""


class LoraMethod(TrainingMethod):
    """A low-rank adapter over a frozen base; the result is the adapter alone."""

    name = "lora"
    artifact_kind = "adapter"

    def load_plan(self, cfg: TrainConfig) -> LoadPlan:
        """Under bf16 the frozen base stays bf16 (half the memory); peft keeps the adapter in fp32."""
        from ftcore.train.sft import resolve_bf16

        return LoadPlan(dtype="bfloat16" if resolve_bf16(cfg) else "float32")

    def peft_config(self, model: Any, cfg: TrainConfig) -> Any:
        """The peft LoraConfig; DoRA is this with use_dora=True."""
        from peft import LoraConfig, TaskType

        return LoraConfig(
            # a score-head model (reward model): SEQ_CLS trains and saves the head beside the adapter
            task_type=TaskType.SEQ_CLS if is_score_model(model) else TaskType.CAUSAL_LM,
            r=cfg.lora.rank,
            lora_alpha=cfg.lora.alpha or 2 * cfg.lora.rank,
            lora_dropout=cfg.lora.dropout,
            target_modules=lora_targets(model, cfg.lora.target),
        )

    def prepare(self, model: Any, cfg: TrainConfig) -> Any:
        from peft import get_peft_model

        model = get_peft_model(model, self.peft_config(model, cfg))
        trainable, total = model.get_nb_trainable_parameters()
        log.info("lora: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
        return model

    def save(self, model: Any, out_dir: Path, base_dtype: Any = None) -> None:
        model.save_pretrained(out_dir, safe_serialization=True)


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


def is_score_model(model: Any) -> bool:
    """A model with a sequence-score head (AutoModelForSequenceClassification), as the rm stage trains."""
    return type(model).__name__.endswith("ForSequenceClassification")


def lora_targets(model: Any, target: list[str]) -> Any:
    """peft's target_modules for train.lora.target; a name the model lacks is a config error."""
    if target == ["all"]:
        return "all-linear"
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [name for name in target if name not in present]
    if missing:
        import torch

        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        )
        raise ConfigError(
            f"train.lora.target: {', '.join(missing)} not found in the model; "
            f"its linear layers are: {', '.join(linear)} (or 'all')"
        )
    return target


METHODS: dict[str, TrainingMethod] = {method.name: method for method in (LoraMethod(), FullMethod())}
