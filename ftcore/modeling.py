"""Loading models and tokenizers the same way in every step (dtype, device, remote code)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def bf16_supported() -> bool:
    """bf16 by default only on GPUs that do it natively; CPU runs stay in fp32 (exact, tiny models)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX). Without it torch emulates
    bf16 matmuls, measured 7-50x slower than fp32 on an AVX2 EPYC, so bf16 on such a CPU is a trap."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: unknown, assume the user knows
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def saved_dtype(path: str | Path) -> Any:
    """The torch dtype a model folder's weights are stored in (config.json), or None if unknown."""
    import torch

    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    name = config.get("dtype") or config.get("torch_dtype")
    dtype = getattr(torch, str(name), None) if name else None
    return dtype if isinstance(dtype, torch.dtype) else None


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def saved_head(path: str | Path) -> str:
    """The head a saved model or adapter folder was trained with: "score" for a reward model (a
    *ForSequenceClassification config, or a SEQ_CLS adapter), else "causal_lm"."""
    import json

    folder = Path(path)
    try:
        if (folder / "adapter_config.json").is_file():
            return (
                "score"
                if json.loads((folder / "adapter_config.json").read_text()).get("task_type") == "SEQ_CLS"
                else "causal_lm"
            )
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return "causal_lm"
    return "score" if any(a.endswith("ForSequenceClassification") for a in architectures) else "causal_lm"


def load_model(
    path: str | Path,
    trust_remote_code: bool = False,
    dtype: str = "auto",
    device: str | None = None,
    quantization_config: Any = None,
    device_map: Any = None,
    model_kwargs: dict[str, Any] | None = None,
    head: str = "causal_lm",
):
    """A causal LM in eval mode; dtype 'auto' = bf16 where native, else fp32. `model_kwargs` go to
    from_pretrained as they are (attn_implementation, an edited config). head="score" loads it with a
    one-number score head instead (a reward model: AutoModelForSequenceClassification).

    With a device_map (or a quantization config) transformers places the weights; otherwise the whole
    model goes to `device` (default: the GPU if there is one).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype == "auto":
        torch_dtype = torch.bfloat16 if bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    extra: dict[str, Any] = dict(model_kwargs or {})
    if quantization_config is not None:
        extra["quantization_config"] = quantization_config
    if device_map is not None:
        extra["device_map"] = device_map
    auto_class = AutoModelForCausalLM
    if head == "score":
        from transformers import AutoModelForSequenceClassification

        auto_class, extra["num_labels"] = AutoModelForSequenceClassification, 1
    model = auto_class.from_pretrained(
        str(path), dtype=torch_dtype, trust_remote_code=trust_remote_code, **extra
    )
    if device_map is None and quantization_config is None:
        model.to(device or pick_device())
    model.eval()
    return model


def load_with_adapter(
    base: str | Path, adapter: str | Path | None, trust_remote_code: bool = False, **kwargs: Any
):
    """Base model plus an optional LoRA adapter (unmerged), as evaluation and merge need it."""
    model = load_model(base, trust_remote_code=trust_remote_code, **kwargs)
    if adapter is None:
        return model
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model
