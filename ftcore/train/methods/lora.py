"""LoRA and its variants: rsLoRA, DoRA, PiSSA init, LoRA+, extra trained modules, QLoRA on a
bitsandbytes-quantized base, and training an existing adapter further."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ftcore.config.sections import TrainConfig
from ftcore.errors import ConfigError
from ftcore.train.methods.base import LoadPlan, TrainingMethod, is_score_model

log = logging.getLogger("ftcore.train")

_PISSA_INIT = "_ftflow_pissa_init"  # attribute of the peft model: its initial adapter's folder


class LoraMethod(TrainingMethod):
    """A low-rank adapter over a frozen base; the result is the adapter alone. `adapter_dir`: an
    existing adapter to train further (model.adapter_name_or_path with train.lora.train_adapter)."""

    name = "lora"
    artifact_kind = "adapter"
    config_sections = frozenset({"lora", "quantization"})

    def __init__(self, adapter_dir: str | Path | None = None) -> None:
        self.adapter_dir = Path(adapter_dir) if adapter_dir else None

    def load_plan(self, cfg: TrainConfig) -> LoadPlan:
        """Under bf16 the frozen base stays bf16 (half the memory); peft keeps the adapter in fp32."""
        from ftcore.train.sft import resolve_bf16

        return LoadPlan(dtype="bfloat16" if resolve_bf16(cfg) else "float32")

    def peft_config(self, model: Any, cfg: TrainConfig) -> Any:
        """The peft LoraConfig of train.lora (DoRA, rsLoRA, PiSSA and modules_to_save included)."""
        from peft import LoraConfig, TaskType

        lora = cfg.lora
        init: bool | str = True
        if lora.pissa_init:
            init = f"pissa_niter_{lora.pissa_iter}" if lora.pissa_iter > 0 else "pissa"
        return LoraConfig(
            # a score-head model (reward model): SEQ_CLS trains and saves the head beside the adapter
            task_type=TaskType.SEQ_CLS if is_score_model(model) else TaskType.CAUSAL_LM,
            r=lora.rank,
            lora_alpha=lora.alpha or 2 * lora.rank,
            lora_dropout=lora.dropout,
            target_modules=lora_targets(model, lora.target),
            use_rslora=lora.use_rslora,
            use_dora=lora.use_dora,
            init_lora_weights=init,
            modules_to_save=module_names(model, lora.additional_target, "train.lora.additional_target"),
        )

    def prepare(self, model: Any, cfg: TrainConfig) -> Any:
        from peft import PeftModel, get_peft_model

        if self.adapter_dir is not None:  # continue training that adapter, with its own settings
            model = PeftModel.from_pretrained(model, str(self.adapter_dir), is_trainable=True)
            log.info("lora: training the adapter at %s further", self.adapter_dir)
        else:
            model = get_peft_model(model, self.peft_config(model, cfg))
        if cfg.lora.pissa_init:
            _save_pissa_init(model)
        trainable, total = model.get_nb_trainable_parameters()
        log.info("lora: %d trainable of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)
        return model

    def create_optimizer(self, model: Any, args: Any, cfg: TrainConfig) -> Any:
        """LoRA+: the B matrices get learning_rate x loraplus_lr_ratio (peft's param groups)."""
        if cfg.lora.loraplus_lr_ratio is None:
            return None
        import torch
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(
            model,
            torch.optim.AdamW,
            lr=args.learning_rate,
            loraplus_lr_ratio=cfg.lora.loraplus_lr_ratio,
            loraplus_lr_embedding=cfg.lora.loraplus_lr_embedding,
            weight_decay=args.weight_decay,
        )

    def save(self, model: Any, out_dir: Path, base_dtype: Any = None) -> None:
        """A PiSSA adapter is converted (peft's path_initial_model_for_weight_conversion) into a plain
        LoRA of twice the rank that applies to the ORIGINAL base, so merge and serving need nothing else."""
        init = getattr(model, _PISSA_INIT, None)
        if init and Path(init).is_dir():
            model.save_pretrained(
                out_dir, safe_serialization=True, path_initial_model_for_weight_conversion=init
            )
            shutil.rmtree(init, ignore_errors=True)  # ftflow's own temp folder, made in prepare
        else:
            model.save_pretrained(out_dir, safe_serialization=True)


def _save_pissa_init(model: Any) -> None:
    """Keep the freshly initialized PiSSA adapter (before any step): the saved result is converted
    against it. Its config says init_lora_weights=True so reloading it does not factor again."""
    config = model.peft_config["default"]
    init, config.init_lora_weights = config.init_lora_weights, True
    folder = tempfile.mkdtemp(prefix="ftflow-pissa-init-")
    model.save_pretrained(folder, safe_serialization=True)
    config.init_lora_weights = init
    setattr(model, _PISSA_INIT, folder)


class QLoraMethod(LoraMethod):
    """LoRA over a base quantized on the fly by bitsandbytes (4-bit nf4/fp4 or 8-bit; CPU works). The
    adapter merges into the full-precision base (the merge step always loads the base unquantized)."""

    name = "qlora"

    def load_plan(self, cfg: TrainConfig) -> LoadPlan:
        import torch
        from transformers import BitsAndBytesConfig

        from ftcore.train.sft import resolve_bf16

        quant = cfg.quantization
        compute = "bfloat16" if resolve_bf16(cfg) else "float32"
        if quant.bit == 4:
            bnb = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=quant.type,
                bnb_4bit_use_double_quant=quant.double_quantization,
                bnb_4bit_compute_dtype=getattr(torch, compute),
            )
        else:
            bnb = BitsAndBytesConfig(load_in_8bit=True)
        device_map = {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"
        return LoadPlan(dtype=compute, quantization_config=bnb, device_map=device_map)

    def prepare(self, model: Any, cfg: TrainConfig) -> Any:
        """peft's k-bit preparation (norms in fp32, input grads) before the adapter goes on."""
        from peft import prepare_model_for_kbit_training

        from ftcore.train.methods.speed import gradient_checkpointing

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing(cfg.speed),
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        return super().prepare(model, cfg)


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


def module_names(model: Any, names: list[str], key: str) -> list[str] | None:
    """Module names that must exist in the model (None for an empty list); else a ConfigError on `key`."""
    if not names:
        return None
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [name for name in names if name not in present]
    if missing:
        top = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_children()} | {"embed_tokens", "lm_head"})
        raise ConfigError(f"{key}: {', '.join(missing)} not found in the model (e.g. {', '.join(top)})")
    return names
