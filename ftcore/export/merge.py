"""Merging a LoRA adapter into its base model, saved as a self-contained safetensors model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

_CARRY_FILES = ("generation_config.json", "ftflow_builtin.json")


def merge_lora(
    base_path: str | Path,
    adapter_path: str | Path,
    out_dir: Path,
    trust_remote_code: bool = False,
    template: str | None = None,
) -> None:
    """Write base + adapter as one model (weights, tokenizer, chat template, generation config).

    The merge runs in fp32 for precision, then the weights are cast back to the base's own dtype.
    `template` is the chat template the adapter was trained with: the merged model carries it as
    its chat_template and its stop tokens in generation_config.json, so serving formats prompts and
    stops exactly as training did. Without it the tokenizer's own Jinja is kept.
    """
    import torch
    from peft import PeftModel

    from ftcore.data.template import apply_template, get_template
    from ftcore.modeling import load_model, load_tokenizer, saved_dtype

    chat = get_template(template) if template else None  # an unknown name fails before the merge
    # ftflow's adapters carry the tokenizer they were trained with; one from elsewhere may not
    has_tokenizer = any(
        (Path(adapter_path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )
    tokenizer = load_tokenizer(adapter_path if has_tokenizer else base_path, trust_remote_code)
    if chat is not None:
        chat.check_tokenizer(tokenizer)
    base_dtype = saved_dtype(base_path)
    base = load_model(base_path, trust_remote_code, dtype="float32", device="cpu")
    merged = PeftModel.from_pretrained(base, str(adapter_path)).merge_and_unload()
    if base_dtype is not None and base_dtype != torch.float32:
        merged = merged.to(base_dtype)
    merged.save_pretrained(out_dir, safe_serialization=True)
    for name in _CARRY_FILES:
        if (Path(base_path) / name).is_file():
            shutil.copy2(Path(base_path) / name, out_dir / name)
    if chat is None:
        tokenizer.save_pretrained(out_dir)
        return
    apply_template(chat, out_dir, tokenizer)
    marker = out_dir / "ftflow_builtin.json"
    if marker.is_file():  # a built-in's marker names its default template: name the trained one
        meta = json.loads(marker.read_text())
        marker.write_text(json.dumps({**meta, "template": template}, indent=2))
