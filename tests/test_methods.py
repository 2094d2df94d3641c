"""Training methods as objects: what each loads, trains and saves, with no method branches in the step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftcore import steps
from ftcore.errors import ConfigError
from ftcore.modeling import load_model, saved_dtype
from ftcore.train.methods import METHODS, TrainingMethod
from tests.helpers import prepared_inputs, small_config

REPO = Path(__file__).resolve().parents[1]


def test_every_method_declares_its_artifact_and_loading(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, "train.bf16=true").train
    kinds = {name: m.artifact_kind for name, m in METHODS.items()}
    assert kinds == {
        "lora": "adapter",
        "qlora": "adapter",
        "freeze": "model",
        "full": "model",
        "galore": "model",
        "apollo": "model",
        "badam": "model",
    }
    for name, method in METHODS.items():
        assert isinstance(method, TrainingMethod) and method.name == name
        assert (
            method.optimizer_args(cfg, use_cpu=True)
            .get("optim", "adamw_torch")
            .startswith(("adamw_torch", name))
        )
    assert METHODS["lora"].load_plan(cfg).dtype == "bfloat16"  # frozen base in bf16
    assert METHODS["full"].load_plan(cfg).dtype == "float32"  # fp32 master weights, bf16 autocast


def test_the_train_step_does_not_branch_on_the_method() -> None:
    for path in (REPO / "ftcore/steps/train.py", REPO / "ftcore/train/job.py", REPO / "ftcore/train/sft.py"):
        code = path.read_text()
        assert '== "lora"' not in code and '== "full"' not in code and "finetuning_type ==" not in code, path


def test_unknown_lora_target_is_a_config_error_naming_the_field(tiny_qwen2: Path, tmp_path: Path) -> None:
    cfg = small_config(tmp_path, "train.lora.target=q_proj,qkv_projx").train
    model = load_model(tiny_qwen2, dtype="float32", device="cpu")
    with pytest.raises(ConfigError, match=r"train\.lora\.target: qkv_projx not found.*q_proj"):
        METHODS["lora"].prepare(model, cfg)


@pytest.fixture()
def bf16_base(tiny_qwen2: Path, tmp_path: Path) -> Path:
    """A bf16 copy of the tiny model, as most released checkpoints are stored."""
    from transformers import AutoTokenizer

    out = tmp_path / "tiny-qwen2-bf16"
    load_model(tiny_qwen2, dtype="bfloat16", device="cpu").save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tiny_qwen2)).save_pretrained(out)
    assert saved_dtype(out) == torch.bfloat16
    return out


def test_full_finetune_is_saved_in_the_base_models_dtype(bf16_base: Path, tmp_path: Path) -> None:
    cfg = small_config(
        tmp_path / "job",
        "train.report_to=none",
        "train.finetuning_type=full",
        "train.max_steps=2",
        "train.save_steps=2",
        "train.bf16=false",
        "data.template=qwen",
        model={"name_or_path": str(bf16_base)},
    )
    trained = steps.train(cfg, *prepared_inputs(cfg))
    assert trained.kind == "model"
    weights = load_file(Path(trained.path) / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}, "fp32 training must not double the size"
    assert json.loads((Path(trained.path) / "config.json").read_text())["dtype"] == "bfloat16"
    before = load_file(bf16_base / "model.safetensors")
    assert any(not torch.equal(before[k], weights[k]) for k in before), "training must change the weights"
