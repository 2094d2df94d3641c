"""Map LLaMA-Factory's flat YAML keys onto ftflow's sectioned config.

A LLaMA-Factory user's `train_lora.yaml` should run with `ft train that.yaml` unchanged. Keys that
change nothing here (logging switches, cache flags) are accepted and reported; any other unknown key
is an error that names it, as for the native format.
"""

from __future__ import annotations

import logging
from pathlib import PurePath
from typing import Any

from ftcore.errors import ConfigError

log = logging.getLogger(__name__)


def _prefixed(flat_prefix: str, section: str, names: str) -> dict[str, str]:
    """{flat_prefix + name: section + name} for the space-separated names (LLaMA-Factory's key families)."""
    return {flat_prefix + name: section + name for name in names.split()}


# flat key -> dotted path in PipelineConfig
KEY_MAP: dict[str, str] = {
    "model_name_or_path": "model.name_or_path",
    "model_revision": "model.revision",
    "adapter_name_or_path": "model.adapter_name_or_path",
    "trust_remote_code": "model.trust_remote_code",
    "cache_dir": "model.cache_dir",
    "template": "data.template",
    "dataset": "data.dataset",
    "dataset_dir": "data.dataset_dir",
    "eval_dataset": "data.eval_dataset",
    "val_size": "data.val_size",
    "cutoff_len": "data.cutoff_len",
    "max_samples": "data.max_samples",
    "train_on_prompt": "data.train_on_prompt",
    "mask_history": "data.mask_history",
    "enable_thinking": "data.enable_thinking",
    "preprocessing_num_workers": "data.preprocessing_num_workers",
    "mix_strategy": "data.mix_strategy",
    "interleave_probs": "data.interleave_probs",
    "streaming": "data.streaming",
    "stage": "train.stage",
    "finetuning_type": "train.finetuning_type",
    "lora_rank": "train.lora.rank",
    "lora_alpha": "train.lora.alpha",
    "lora_dropout": "train.lora.dropout",
    "lora_target": "train.lora.target",
    "pref_beta": "train.pref.beta",
    "pref_ftx": "train.pref.ftx",
    "pref_loss": "train.pref.loss",  # orpo / simpo -> stage orpo / simpo (LLaMA-Factory runs them as dpo)
    "simpo_gamma": "train.pref.simpo_gamma",
    "ref_model": "train.pref.ref_model",
    "kto_chosen_weight": "train.pref.kto_chosen_weight",
    "kto_rejected_weight": "train.pref.kto_rejected_weight",
    "output_dir": "train.output_dir",
    "logging_steps": "train.logging_steps",
    "save_steps": "train.save_steps",
    "save_total_limit": "train.save_total_limit",
    "per_device_train_batch_size": "train.per_device_train_batch_size",
    "per_device_eval_batch_size": "train.per_device_eval_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "learning_rate": "train.learning_rate",
    "num_train_epochs": "train.num_train_epochs",
    "max_steps": "train.max_steps",
    "lr_scheduler_type": "train.lr_scheduler_type",
    "warmup_ratio": "train.warmup_ratio",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "bf16": "train.bf16",
    "fp16": "train.fp16",
    "seed": "train.seed",
    "report_to": "train.report_to",
    "resume_from_checkpoint": "train.resume_from_checkpoint",
    "reward_model": "train.rl.reward_model",
    "ppo_epochs": "train.rl.ppo_epochs",
    "ppo_buffer_size": "train.rl.ppo_buffer_size",
    "ppo_target": "train.rl.ppo_target",
    "ppo_score_norm": "train.rl.ppo_score_norm",
    "ppo_whiten_rewards": "train.rl.ppo_whiten_rewards",
    "export_dir": "export.export_dir",
    "export_size": "export.export_size",
    "export_device": "export.export_device",
    "export_legacy_format": "export.export_legacy_format",
    "infer_dtype": "export.dtype",
    "export_hub_model_id": "export.export_hub_model_id",
    "export_quantization_method": "export.export_quantization_method",
    "export_quantization_bit": "export.export_quantization_bit",
    "export_quantization_scheme": "export.export_quantization_scheme",
    "export_quantization_dataset": "export.export_quantization_dataset",
    "export_quantization_nsamples": "export.export_quantization_nsamples",
    "export_quantization_maxlen": "export.export_quantization_maxlen",
    "export_quantization_group_size": "export.export_quantization_group_size",
    "max_new_tokens": "eval.max_new_tokens",
    "do_sample": "eval.do_sample",
    "temperature": "eval.temperature",
    "top_p": "eval.top_p",
    "top_k": "eval.top_k",
    "num_beams": "eval.num_beams",
    "repetition_penalty": "eval.repetition_penalty",
    "infer_backend": "serve.backend",  # huggingface -> transformers
    "vllm_maxlen": "serve.max_model_len",
    "vllm_enforce_eager": "serve.vllm_args",  # true -> [--enforce-eager]
    # many processes (the launcher itself comes from FORCE_TORCHRUN / NNODES / ... as in LLaMA-Factory)
    "deepspeed": "train.distributed.deepspeed",
    "fsdp": "train.distributed.fsdp",
    "fsdp_config": "train.distributed.fsdp_config",
    "ddp_timeout": "train.distributed.ddp_timeout",
    **_prefixed("freeze_", "train.freeze.", "trainable_layers trainable_modules extra_modules"),
    **_prefixed("", "train.lora.", "additional_target use_rslora use_dora pissa_init pissa_iter"),
    **_prefixed("", "train.lora.", "loraplus_lr_ratio loraplus_lr_embedding"),
    **_prefixed("quantization_", "train.quantization.", "bit method type"),
    "double_quantization": "train.quantization.double_quantization",
    "use_galore": "train.galore.enabled",
    **_prefixed("galore_", "train.galore.", "target rank update_interval scale proj_type layerwise"),
    "use_apollo": "train.apollo.enabled",
    **_prefixed("apollo_", "train.apollo.", "target rank update_interval scale proj proj_type scale_type"),
    **_prefixed("apollo_", "train.apollo.", "layerwise scale_front"),
    "use_badam": "train.badam.enabled",
    **_prefixed("badam_", "train.badam.", "mode start_block switch_mode switch_interval update_ratio"),
    **_prefixed("badam_", "train.badam.", "mask_mode verbose"),
    "disable_gradient_checkpointing": "train.speed.gradient_checkpointing",  # inverted
    **_prefixed("", "train.speed.", "flash_attn enable_liger_kernel use_unsloth neftune_noise_alpha"),
    **_prefixed("", "train.speed.", "rope_scaling"),
    **_prefixed("", "train.speed.", "packing neat_packing"),
}

# LLaMA-Factory spellings of values that ftflow names otherwise
VALUE_MAP: dict[str, dict[Any, Any]] = {
    "infer_backend": {"huggingface": "transformers"},
    "flash_attn": {"disabled": "eager"},
    "quantization_method": {"bitsandbytes": "bnb"},
}

# Keys that steer LLaMA-Factory's own machinery and have no effect here: accepted, reported.
IGNORED_KEYS = frozenset(
    {
        "do_train",
        "do_eval",
        "do_predict",
        "overwrite_output_dir",
        "overwrite_cache",
        "plot_loss",
        "dataloader_num_workers",
        "eval_strategy",
        "eval_steps",
        "save_only_model",
        "use_fast_tokenizer",
        "pissa_convert",  # ftflow always saves a PiSSA adapter converted to plain LoRA
        "buffer_size",  # streaming's shuffle buffer: ftflow streams the tokenized rows in order
    }
)

_FLAT_MARKERS = frozenset({"model_name_or_path", "stage", "finetuning_type", "dataset"})


def is_flat(raw: dict[str, Any]) -> bool:
    """A LLaMA-Factory file has its keys at the top level instead of in sections."""
    return bool(_FLAT_MARKERS & raw.keys())


def flat_to_nested(
    raw: dict[str, Any], source: str = "<config>", lines: dict[str, int] | None = None
) -> dict[str, Any]:
    """Turn flat LLaMA-Factory keys into the nested dict PipelineConfig validates."""
    nested: dict[str, Any] = {}
    ignored = []
    for key, value in raw.items():
        if key in ("name", "workdir"):
            nested[key] = value
        elif key in KEY_MAP:
            if key in ("lora_target", "dataset", "eval_dataset", "report_to") and isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if key == "report_to" and value in (["none"], ["None"]):
                value = ["none"]
            if key in VALUE_MAP and isinstance(value, str | int | bool | None):
                value = VALUE_MAP[key].get(value, value)
            if key == "disable_gradient_checkpointing":
                value = not value
            if key == "vllm_enforce_eager":
                value = ["--enforce-eager"] if value else []
            if key == "pref_loss" and value in ("orpo", "simpo"):
                continue  # a stage of its own here (below)
            set_dotted(nested, KEY_MAP[key], value)
        elif key in IGNORED_KEYS:
            ignored.append(key)
        elif key == "hf_hub_token":  # a secret in a file that lands in logs, manifests and MLflow
            where = f"{source}:{lines[key]}" if lines and key in lines else source
            raise ConfigError(f"{where}: hf_hub_token is not read from configs; set the HF_TOKEN variable")
        else:
            where = f"{source}:{lines[key]}" if lines and key in lines else source
            raise ConfigError(
                f"{where}: unknown LLaMA-Factory key '{key}'. Supported keys: {', '.join(sorted(KEY_MAP))}"
            )
    if raw.get("do_train") is True and raw.get("adapter_name_or_path"):
        # LLaMA-Factory trains an adapter it is given further; ftflow's default only evaluates / merges it
        set_dotted(nested, "train.lora.train_adapter", True)
    if raw.get("pref_loss") in ("orpo", "simpo") and raw.get("stage", "dpo") == "dpo":
        set_dotted(nested, "train.stage", raw["pref_loss"])  # LLaMA-Factory runs them as stage dpo
    if raw.get("do_train") is False:
        raise ConfigError(f"{source}: do_train: false is not supported by `ft train`; use `ft eval` instead")
    if ignored:
        log.info("%s: ignoring LLaMA-Factory keys with no effect in ftflow: %s", source, ", ".join(ignored))
    return nested


def default_names(nested: dict[str, Any], source: str | None) -> None:
    """Give a flat config its own job and registry model name unless it sets them: the last part of
    output_dir, else the config file's name. Without this every LLaMA-Factory file would share one
    workdir (runs/ftflow-job) and one registered model."""
    output_dir = nested.get("train", {}).get("output_dir")
    if output_dir and PurePath(str(output_dir)).name not in ("", ".", ".."):
        derived = PurePath(str(output_dir)).name
    elif source:
        derived = PurePath(source).stem
    else:
        return
    nested.setdefault("name", derived)
    registry = nested.setdefault("registry", {})
    if isinstance(registry, dict):
        registry.setdefault("model_name", derived)


def set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set target['a']['b']['c'] = value for dotted='a.b.c', creating dicts on the way."""
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value
