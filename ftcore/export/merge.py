"""Merging a LoRA adapter into its base model, saved as a self-contained safetensors model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ftcore.errors import ConfigError

_CARRY_FILES = ("generation_config.json", "ftflow_builtin.json")
# files older GPTQ / AWQ checkpoints carry instead of config.json's quantization_config
_QUANT_FILES = ("quantize_config.json", "quant_config.json")


def check_mergeable_base(base_path: str | Path) -> None:
    """Refuse a quantized base (bitsandbytes, GPTQ, AWQ, compressed-tensors ...) before any loading:
    LoRA deltas added to dequantized-then-requantized weights are not what was trained, and most
    quantizers cannot be written back at all. QLoRA adapters merge into the unquantized base."""
    base = Path(base_path)
    try:
        config = json.loads((base / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    quant = config.get("quantization_config")
    found = [name for name in _QUANT_FILES if (base / name).is_file()]
    if quant is None and not found:
        return
    method = (quant or {}).get("quant_method") if isinstance(quant, dict) else None
    what = f"quantized ({method})" if method else f"quantized ({', '.join(found) or 'quantization_config'})"
    raise ConfigError(
        f"export.merge: the base model at {base} is {what}; an adapter cannot be merged into quantized "
        "weights. Merge into the unquantized base model (model.name_or_path; a QLoRA adapter merges "
        "into it too), or set export.merge: false to keep the adapter unmerged (serve it with --lora)"
    )


def merge_lora(
    base_path: str | Path,
    adapter_path: str | Path,
    out_dir: Path,
    trust_remote_code: bool = False,
    template: str | None = None,
    dtype: str = "auto",
    max_shard_gb: float = 5,
    device: str = "cpu",
) -> None:
    """Write base + adapter as one model (weights, tokenizer, chat template, generation config).

    The merge runs in fp32 for precision on `device` (cpu, or auto: the GPU when there is one), then
    the weights are cast to `dtype` (auto: the base's own dtype) and saved as safetensors shards of at
    most `max_shard_gb` GB (several shards come with model.safetensors.index.json).
    `template` is the chat template the adapter was trained with: the merged model carries it as
    its chat_template and its stop tokens in generation_config.json, so serving formats prompts and
    stops exactly as training did. Without it the tokenizer's own Jinja is kept.
    """
    import torch
    from peft import PeftModel

    from ftcore.data.template import apply_template, get_template
    from ftcore.modeling import load_model, load_tokenizer, saved_dtype, saved_head

    chat = get_template(template) if template else None  # an unknown name fails before the merge
    # ftflow's adapters carry the tokenizer they were trained with; one from elsewhere may not
    has_tokenizer = any(
        (Path(adapter_path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")
    )
    tokenizer = load_tokenizer(adapter_path if has_tokenizer else base_path, trust_remote_code)
    if chat is not None:
        chat.check_tokenizer(tokenizer)
    check_mergeable_base(base_path)
    target = saved_dtype(base_path) if dtype == "auto" else getattr(torch, dtype)
    base = load_model(
        base_path,
        trust_remote_code,
        dtype="float32",
        device=None if device == "auto" else "cpu",
        head=saved_head(adapter_path),  # a reward model's adapter carries its score head: kept
    )
    merged = PeftModel.from_pretrained(base, str(adapter_path)).merge_and_unload()
    if target is not None and target != torch.float32:
        merged = merged.to(target)
    merged.to("cpu").save_pretrained(out_dir, max_shard_size=int(max_shard_gb * 10**9))
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


def export_full(
    trained_dir: str | Path,
    out_dir: Path,
    trust_remote_code: bool = False,
    dtype: str = "auto",
    max_shard_gb: float = 5,
) -> None:
    """A full fine-tune's export folder: its weights as they are (hard links, no copy) when they
    already meet `dtype` and `max_shard_gb`, else re-saved in that dtype and shard size. Either way
    the training's own folder is never touched."""
    import os

    import torch

    from ftcore.modeling import load_model, saved_dtype, saved_head

    src = Path(trained_dir)
    weights = sorted(src.glob("*.safetensors"))
    target = None if dtype == "auto" else getattr(torch, dtype)
    fits = all(w.stat().st_size <= max_shard_gb * 10**9 for w in weights)
    resave = (target is not None and target != saved_dtype(src)) or not fits
    for item in src.iterdir():
        weights_file = item.suffix == ".safetensors" or item.name.endswith(".index.json")
        if not item.is_file() or (resave and weights_file):
            continue
        # only the weights are linked: the small files are copied, so whatever writes them in the
        # export (save_pretrained rewrites config.json) can never change the training's folder
        if weights_file:
            try:
                os.link(item, out_dir / item.name)
                continue
            except OSError:  # another filesystem: a copy
                pass
        shutil.copy2(item, out_dir / item.name)
    if resave:
        keep = target or saved_dtype(src) or torch.float32
        dtype_name = str(keep).removeprefix("torch.")
        model = load_model(src, trust_remote_code, dtype=dtype_name, device="cpu", head=saved_head(src))
        model.save_pretrained(out_dir, max_shard_size=int(max_shard_gb * 10**9))
