"""Loading models and tokenizers the same way in every stage (dtype, device, remote code)."""

from __future__ import annotations

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


def load_tokenizer(path: str | Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    path: str | Path, trust_remote_code: bool = False, dtype: str = "auto", device: str | None = None
):
    """A causal LM in eval mode on the chosen device; dtype 'auto' = bf16 where native, else fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    if dtype == "auto":
        torch_dtype = torch.bfloat16 if bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(
        str(path), dtype=torch_dtype, trust_remote_code=trust_remote_code
    )
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
