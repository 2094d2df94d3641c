"""Merging a LoRA adapter into its base model, saved as a self-contained safetensors model."""

from __future__ import annotations

import shutil
from pathlib import Path

_CARRY_FILES = ("generation_config.json", "ftflow_builtin.json")


def merge_lora(
    base_path: str | Path, adapter_path: str | Path, out_dir: Path, trust_remote_code: bool = False
) -> None:
    """Write base + adapter as one model (weights, tokenizer, chat template, generation config).

    The merge runs in fp32 for precision, then the weights are cast back to the base's own dtype.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoConfig

    from ftcore.modeling import load_model, load_tokenizer

    base_dtype = getattr(
        AutoConfig.from_pretrained(str(base_path), trust_remote_code=trust_remote_code), "dtype", None
    )
    base = load_model(base_path, trust_remote_code, dtype="float32", device="cpu")
    merged = PeftModel.from_pretrained(base, str(adapter_path)).merge_and_unload()
    if isinstance(base_dtype, torch.dtype) and base_dtype != torch.float32:
        merged = merged.to(base_dtype)
    merged.save_pretrained(out_dir, safe_serialization=True)
    # the adapter's tokenizer copy carries the chat template the model was trained with
    load_tokenizer(adapter_path, trust_remote_code).save_pretrained(out_dir)
    for name in _CARRY_FILES:
        if (Path(base_path) / name).is_file():
            shutil.copy2(Path(base_path) / name, out_dir / name)
