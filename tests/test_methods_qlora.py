"""QLoRA with bitsandbytes on CPU: the base loads quantized, only the adapter trains, the saved adapter
reloads to the same logits on the quantized base and merges into the FULL-PRECISION base. Pre-quantized
GPTQ / AWQ checkpoints are refused on CPU with a clear error."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from ftcore.errors import ConfigError
from ftcore.export.merge import merge_lora
from ftcore.modeling import load_model
from ftcore.train.methods import method_for, trainable_names
from tests.helpers import small_config
from tests.methods_util import changed, logits, losses, train_method


def _quantized_linears(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")}


def test_qlora_4bit_trains_reloads_and_merges_into_the_fp_base(tmp_path: Path) -> None:
    from peft import PeftModel

    t = train_method(tmp_path, "train.quantization.bit=4", "train.quantization.type=nf4")
    assert t.method.name == "qlora"
    assert "Linear4bit" in _quantized_linears(t.model)
    assert all("lora_" in n for n in trainable_names(t.model))
    assert changed(t) == set(t.before) and all(math.isfinite(x) for x in losses(t))
    trained = logits(t.model)
    base_q = t.method.load(t.base, t.cfg.train)  # a fresh quantized base + the saved adapter
    assert torch.allclose(logits(PeftModel.from_pretrained(base_q, str(t.saved))), trained, atol=1e-5)
    out = tmp_path / "merged"
    out.mkdir()
    merge_lora(t.base, t.saved, out)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    merged = load_model(out, dtype="float32", device="cpu")
    assert not _quantized_linears(merged)
    fp = PeftModel.from_pretrained(load_model(t.base, dtype="float32", device="cpu"), str(t.saved))
    assert torch.allclose(logits(merged), logits(fp), atol=1e-4)  # the merge used the fp weights
    base = logits(load_model(t.base, dtype="float32", device="cpu"))
    assert not torch.allclose(logits(merged), base, atol=1e-3), "the merged adapter changes the output"


@pytest.mark.parametrize(
    ("settings", "layer"),
    [
        (["train.quantization.bit=8"], "Linear8bitLt"),
        (
            ["train.quantization.bit=4", "train.quantization.type=fp4", "train.lora.use_dora=true"],
            "Linear4bit",
        ),
    ],
)
def test_qlora_8bit_and_4bit_dora_train(tmp_path: Path, settings: list[str], layer: str) -> None:
    t = train_method(tmp_path, *settings, "train.quantization.double_quantization=false")
    assert layer in _quantized_linears(t.model)
    assert changed(t) == set(t.before) and all(math.isfinite(x) for x in losses(t))


def test_pre_quantized_gptq_base_is_refused_on_cpu(tiny_qwen2: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without a CUDA GPU")
    base = tmp_path / "gptq"
    shutil.copytree(tiny_qwen2, base)
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (base / "config.json").write_text(json.dumps(config))
    cfg = small_config(tmp_path / "job", model={"name_or_path": str(base)})
    with pytest.raises(ConfigError, match=r"model\.name_or_path: .* pre-quantized GPTQ checkpoint.*CUDA GPU"):
        method_for(cfg).load(base, cfg.train)
    from ftcore.steps.local import preflight

    with pytest.raises(ConfigError, match=r"pre-quantized GPTQ"):
        preflight(cfg, ["fetch_model", "fetch_dataset", "preprocess", "train"])
