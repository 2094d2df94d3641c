"""Speed and memory switches: attention kernel, gradient checkpointing, NEFTune, RoPE scaling, and the
GPU-only switches (fa2, Liger, Unsloth) refused with the key's name on a machine without them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ftcore.errors import ConfigError
from ftcore.modeling import load_model
from ftcore.train.methods import method_for
from ftcore.train.methods.speed import training_args
from tests.helpers import small_config
from tests.methods_util import changed, logits, losses, train_method


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_flash_attn_picks_the_attention_kernel(tiny_qwen2: Path, tmp_path: Path, kernel: str) -> None:
    cfg = small_config(tmp_path, f"train.speed.flash_attn={kernel}")
    model = method_for(cfg).load(tiny_qwen2, cfg.train)
    assert model.config._attn_implementation == kernel


@pytest.mark.parametrize(
    "switch",
    ["train.speed.flash_attn=fa2", "train.speed.enable_liger_kernel=true", "train.speed.use_unsloth=true"],
)
def test_gpu_only_switches_fail_naming_the_key(tiny_qwen2: Path, tmp_path: Path, switch: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    cfg = small_config(tmp_path, switch)
    key = switch.split("=")[0].removeprefix("train.speed.")
    with pytest.raises(ConfigError, match=rf"train\.speed\.{key}: needs a CUDA GPU"):
        method_for(cfg).load(tiny_qwen2, cfg.train)
    from ftcore.steps.local import preflight

    with pytest.raises(ConfigError, match=rf"train\.speed\.{key}"):  # before any data or model work
        preflight(cfg, ["fetch_model", "train"])


def test_gradient_checkpointing_and_neftune_train(tmp_path: Path) -> None:
    t = train_method(tmp_path, "train.speed.gradient_checkpointing=true", "train.speed.neftune_noise_alpha=5")
    assert t.model.base_model.model.is_gradient_checkpointing
    assert changed(t) == set(t.before) and all(math.isfinite(x) for x in losses(t))
    args = training_args(t.cfg.train.speed)
    assert args["gradient_checkpointing"] and args["neftune_noise_alpha"] == 5.0
    # off unless asked on CPU; LLaMA-Factory's default (on) where a GPU is
    assert (
        training_args(small_config(tmp_path).train.speed)["gradient_checkpointing"]
        is torch.cuda.is_available()
    )


def test_rope_scaling_is_trained_and_saved_with_a_full_model(tmp_path: Path) -> None:
    t = train_method(
        tmp_path, "train.finetuning_type=full", "train.speed.rope_scaling=linear", "train.speed.rope_factor=4"
    )
    base = json.loads((t.base / "config.json").read_text())
    saved = json.loads((t.saved / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "linear" and saved["rope_parameters"]["factor"] == 4.0
    assert saved["max_position_embeddings"] == 4 * base["max_position_embeddings"]
    assert all(math.isfinite(x) for x in losses(t))
    assert torch.allclose(
        logits(load_model(t.saved, dtype="float32", device="cpu")), logits(t.model), atol=1e-6
    )


def test_bf16_on_a_cpu_that_emulates_it_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """bf16 matmuls on a CPU without AVX512-BF16 / AMX run emulated, several times slower than fp32
    (bench/RESULTS.md): asking for them there is allowed but said once."""
    from ftcore.modeling import cpu_bf16_native
    from ftcore.train import sft

    if torch.cuda.is_available() or cpu_bf16_native():
        pytest.skip("this machine does bf16 in hardware")
    sft._warned_cpu_bf16.clear()
    cfg = small_config(tmp_path, "train.bf16=true")
    with caplog.at_level("WARNING", logger="ftcore.train.sft"):
        assert sft.resolve_bf16(cfg.train) is True
        assert sft.resolve_bf16(cfg.train) is True
    warned = [r for r in caplog.records if "no bf16 instructions" in r.getMessage()]
    assert len(warned) == 1
    assert sft.resolve_bf16(small_config(tmp_path).train) is False  # unset: fp32 on this CPU
