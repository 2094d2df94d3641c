"""LoRA variants on the tiny model: what trains, that it moves, that the saved adapter reloads to the
same logits and merges into the ORIGINAL base (PiSSA included), LoRA+ groups, continued adapters."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ftcore.errors import ConfigError
from ftcore.export.merge import merge_lora
from ftcore.modeling import load_model
from ftcore.train.methods import method_for, trainable_names
from tests.helpers import small_config
from tests.methods_util import changed, logits, losses, train_method


def _reloaded(base: Path, adapter: Path) -> torch.Tensor:
    from peft import PeftModel

    return logits(PeftModel.from_pretrained(load_model(base, dtype="float32", device="cpu"), str(adapter)))


def _merged(base: Path, adapter: Path, out: Path) -> torch.Tensor:
    out.mkdir()
    merge_lora(base, adapter, out)
    return logits(load_model(out, dtype="float32", device="cpu"))


def test_dora_rslora_and_additional_target(tmp_path: Path) -> None:
    t = train_method(
        tmp_path,
        "train.lora.use_dora=true",
        "train.lora.use_rslora=true",
        "train.lora.additional_target=norm",
    )
    names = trainable_names(t.model)
    assert any("lora_magnitude_vector" in n for n in names), "DoRA trains a magnitude vector"
    assert any("modules_to_save" in n and ".norm." in n for n in names), "additional_target trains model.norm"
    assert all("lora_" in n or "modules_to_save" in n for n in names), "nothing else trains"
    assert changed(t) == set(t.before) and all(math.isfinite(x) for x in losses(t))
    config = json.loads((t.saved / "adapter_config.json").read_text())
    assert config["use_dora"] and config["use_rslora"] and config["modules_to_save"] == ["norm"]
    trained = logits(t.model)
    assert torch.allclose(_reloaded(t.base, t.saved), trained, atol=1e-5)
    assert torch.allclose(_merged(t.base, t.saved, tmp_path / "merged"), trained, atol=1e-4)


def test_pissa_adapter_is_converted_to_apply_to_the_original_base(tmp_path: Path) -> None:
    t = train_method(tmp_path, "train.lora.pissa_init=true", "train.lora.pissa_iter=4", "train.lora.rank=4")
    assert changed(t) == set(t.before) and all(math.isfinite(x) for x in losses(t))
    config = json.loads((t.saved / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # converted: rank 2r, plain LoRA
    trained = logits(t.model)  # PiSSA-modified base + PiSSA adapter, in memory
    base = logits(load_model(t.base, dtype="float32", device="cpu"))
    assert not torch.allclose(trained, base, atol=1e-3), "training must change the output"
    assert torch.allclose(_reloaded(t.base, t.saved), trained, atol=1e-4)  # the ORIGINAL base
    assert torch.allclose(_merged(t.base, t.saved, tmp_path / "merged"), trained, atol=1e-4)


def test_loraplus_gives_b_matrices_a_higher_learning_rate(tmp_path: Path) -> None:
    t = train_method(tmp_path, "train.lora.loraplus_lr_ratio=16", "train.learning_rate=1e-3")
    assert all(math.isfinite(x) for x in losses(t)) and changed(t) == set(t.before)
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "x"), learning_rate=1e-3, report_to="none")
    optimizer = t.method.create_optimizer(t.model, args, t.cfg.train)
    names = {id(p): n for n, p in t.model.named_parameters()}
    rates = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            rates[names[id(p)]] = group["lr"]
    assert {lr for n, lr in rates.items() if "lora_A" in n} == {1e-3}
    assert {lr for n, lr in rates.items() if "lora_B" in n} == {16e-3}


def test_an_existing_adapter_trains_further(tmp_path: Path) -> None:
    first = train_method(tmp_path / "first")
    cfg = small_config(
        tmp_path / "second", f"model.adapter_name_or_path={first.saved}", "train.lora.train_adapter=true"
    )
    method = method_for(cfg)
    assert method.adapter_dir == first.saved
    second = train_method(
        tmp_path / "second", f"model.adapter_name_or_path={first.saved}", "train.lora.train_adapter=true"
    )
    start = {n.replace(".default", ""): p for n, p in second.before.items()}
    from safetensors.torch import load_file

    saved_first = load_file(first.saved / "adapter_model.safetensors")
    for name, tensor in saved_first.items():  # training started from the given adapter ...
        match = [v for k, v in start.items() if k.endswith(name.removeprefix("base_model.model."))]
        assert match and torch.equal(match[0], tensor.float()), name
    assert changed(second) == set(second.before)  # ... and moved on from it
    assert torch.allclose(_reloaded(second.base, second.saved), logits(second.model), atol=1e-5)


def test_unknown_additional_target_names_the_key(tiny_qwen2: Path, tmp_path: Path) -> None:
    cfg = small_config(tmp_path, "train.lora.additional_target=nonesuch")
    with pytest.raises(ConfigError, match=r"train\.lora\.additional_target: nonesuch not found"):
        method_for(cfg).prepare(load_model(tiny_qwen2, dtype="float32", device="cpu"), cfg.train)
