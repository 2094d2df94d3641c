"""Speed and memory switches (train.speed): attention kernel, RoPE scaling, gradient checkpointing,
NEFTune, Liger and Unsloth; plus the check that a pre-quantized base can be trained here.

GPU-only switches fail with a ConfigError naming the key when the GPU or the package is missing,
before any weights load (preflight calls check_speed too).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from ftcore.config.methods import SpeedConfig
from ftcore.errors import ConfigError

# flash_attn value -> transformers attn_implementation (auto: transformers' own choice)
ATTENTION = {"auto": None, "sdpa": "sdpa", "eager": "eager", "fa2": "flash_attention_2"}
# switch -> (python module it needs, pip package)
GPU_PACKAGES = {
    "flash_attn": ("flash_attn", "flash-attn"),
    "enable_liger_kernel": ("liger_kernel", "liger-kernel"),
    "use_unsloth": ("unsloth", "unsloth"),
}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def check_speed(speed: SpeedConfig) -> None:
    """GPU-only switches need a CUDA GPU and their package: say which key asked for what."""
    wanted = {
        "flash_attn": speed.flash_attn == "fa2",
        "enable_liger_kernel": speed.enable_liger_kernel,
        "use_unsloth": speed.use_unsloth,
    }
    for key, on in wanted.items():
        if not on:
            continue
        module, package = GPU_PACKAGES[key]
        if not _cuda():
            raise ConfigError(f"train.speed.{key}: needs a CUDA GPU and this machine has none; turn it off")
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"train.speed.{key}: needs the {package} package (pip install {package})")
    if speed.use_unsloth:  # present and on a GPU: still not wired into the loaders
        raise ConfigError(
            "train.speed.use_unsloth: Unsloth's patched loader is not supported by ftflow yet; "
            "use enable_liger_kernel for fused kernels instead"
        )


def gradient_checkpointing(speed: SpeedConfig) -> bool:
    """train.speed.gradient_checkpointing, or when unset / auto: on with a GPU (LLaMA-Factory's
    default), off on CPU, where memory is rarely the limit and recomputation costs ~30% of the time.
    sft / pt decide auto by a memory estimate instead (checkpointing_by_estimate)."""
    if isinstance(speed.gradient_checkpointing, bool):
        return speed.gradient_checkpointing
    return _cuda()


def free_memory_bytes() -> int:
    """Free memory of the device that trains: the GPU's, else the machine's MemAvailable."""
    if _cuda():
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def activation_bytes(config: Any, tokens: int, bytes_per_value: int) -> int:
    """Activations autograd keeps for `tokens` tokens of a decoder (per layer ~34 values per hidden
    unit plus the MLP's 3 intermediate tensors; attention by example, so no length^2 term)."""
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    inter = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    layers = int(getattr(config, "num_hidden_layers", 0) or 0)
    return tokens * layers * (17 * hidden + 3 * inter) * bytes_per_value


def checkpointing_by_estimate(speed: SpeedConfig, config: Any, tokens: int, bytes_per_value: int) -> bool:
    """gradient_checkpointing for sft / pt: as set, or for unset / auto: on when a batch of `tokens`
    tokens would keep more than half the free memory in activations."""
    if isinstance(speed.gradient_checkpointing, bool):
        return speed.gradient_checkpointing
    return activation_bytes(config, tokens, bytes_per_value) > free_memory_bytes() // 2


def training_args(speed: SpeedConfig) -> dict[str, Any]:
    """TrainingArguments fields of the speed switches (every stage's trainer spreads these)."""
    args: dict[str, Any] = {
        "gradient_checkpointing": gradient_checkpointing(speed),
        "neftune_noise_alpha": speed.neftune_noise_alpha,
        "use_liger_kernel": speed.enable_liger_kernel,
        "torch_compile": speed.torch_compile,
    }
    if speed.group_by_length and not speed.padding_free:
        args["train_sampling_strategy"] = "group_by_length"
    if speed.gradient_checkpointing is not False:  # on, or maybe on (sft / pt decide auto later)
        # non-reentrant: works with frozen inputs (LoRA, freeze) without enable_input_require_grads
        args["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return args


def load_kwargs(path: str | Path, speed: SpeedConfig, trust_remote_code: bool = False) -> dict[str, Any]:
    """from_pretrained arguments of the switches: the attention kernel and a RoPE-scaled config."""
    kwargs: dict[str, Any] = {}
    if ATTENTION[speed.flash_attn]:
        kwargs["attn_implementation"] = ATTENTION[speed.flash_attn]
    if speed.rope_scaling:
        kwargs["config"] = rope_scaled_config(path, speed, trust_remote_code)
    return kwargs


def rope_scaled_config(path: str | Path, speed: SpeedConfig, trust_remote_code: bool = False) -> Any:
    """The model's config with RoPE stretched by rope_factor (transformers 5: config.rope_parameters);
    the scaled config is saved with a full / freeze model, so inference uses the same positions."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    params = dict(getattr(config, "rope_parameters", None) or {})
    if not params:
        raise ConfigError(f"train.speed.rope_scaling: the model at {path} has no rotary position settings")
    original = getattr(config, "max_position_embeddings", None)
    params.update({"rope_type": speed.rope_scaling, "factor": speed.rope_factor})
    if speed.rope_scaling in ("yarn", "llama3") and original:
        params["original_max_position_embeddings"] = original
    if speed.rope_scaling == "llama3":
        params.setdefault("low_freq_factor", 1.0)
        params.setdefault("high_freq_factor", 4.0)
    config.rope_parameters = params
    if original and speed.rope_scaling != "dynamic":
        config.max_position_embeddings = int(original * speed.rope_factor)
    return config


# quantizers whose pre-quantized checkpoints need GPU kernels to train on
GPU_QUANT = ("gptq", "awq", "aqlm", "eetq", "hqq", "exl2", "marlin")


def check_base_trainable(path: str | Path) -> None:
    """A GPTQ / AWQ / ... checkpoint trains LoRA only through GPU kernels: refuse it on CPU, clearly."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return
    quant = config.get("quantization_config")
    method = str(quant.get("quant_method", "")).lower() if isinstance(quant, dict) else ""
    if method in GPU_QUANT and not _cuda():
        raise ConfigError(
            f"model.name_or_path: {path} is a pre-quantized {method.upper()} checkpoint; training on it "
            "needs a CUDA GPU. On CPU use the unquantized model, with train.quantization.bit: 4 for QLoRA"
        )
