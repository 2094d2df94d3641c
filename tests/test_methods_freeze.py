"""Freeze tuning: +N trains the top N layers, -N the bottom N, only the named modules, plus extra
modules outside the layers; the result is a whole model that reloads to the same logits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ftcore.errors import ConfigError
from ftcore.modeling import load_model
from ftcore.train.methods import method_for, trainable_names
from tests.helpers import small_config
from tests.methods_util import changed, logits, losses, train_method


def _trainable(tiny: Path, tmp_path: Path, *overrides: str) -> set[str]:
    cfg = small_config(tmp_path, "train.finetuning_type=freeze", *overrides)
    return trainable_names(
        method_for(cfg).prepare(load_model(tiny, dtype="float32", device="cpu"), cfg.train)
    )


def test_freeze_picks_layers_and_modules(tiny_qwen2: Path, tmp_path: Path) -> None:
    all_names = {n for n, _ in load_model(tiny_qwen2, dtype="float32", device="cpu").named_parameters()}
    top = _trainable(tiny_qwen2, tmp_path, "train.freeze.trainable_layers=1")  # 2 layers: the last one
    assert top == {n for n in all_names if n.startswith("model.layers.1.")}
    bottom = _trainable(tiny_qwen2, tmp_path, "train.freeze.trainable_layers=-1")
    assert bottom == {n for n in all_names if n.startswith("model.layers.0.")}
    both = _trainable(tiny_qwen2, tmp_path, "train.freeze.trainable_layers=2")
    assert both == {n for n in all_names if n.startswith("model.layers.")}
    mlp = _trainable(
        tiny_qwen2, tmp_path, "train.freeze.trainable_layers=1", "train.freeze.trainable_modules=mlp"
    )
    assert mlp == {n for n in all_names if n.startswith("model.layers.1.mlp.")}
    extra = _trainable(
        tiny_qwen2, tmp_path, "train.freeze.trainable_layers=1", "train.freeze.extra_modules=norm"
    )
    assert extra == top | {"model.norm.weight"}


def test_freeze_names_a_wrong_module(tiny_qwen2: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"train\.freeze\.trainable_modules: attn is not in the layers.*mlp"
    ):
        _trainable(tiny_qwen2, tmp_path, "train.freeze.trainable_modules=attn")
    with pytest.raises(ConfigError, match=r"train\.freeze\.extra_modules: lm_headx"):
        _trainable(tiny_qwen2, tmp_path, "train.freeze.extra_modules=lm_headx")
    with pytest.raises(ConfigError, match=r"train\.freeze\.trainable_layers: 0"):
        small_config(tmp_path, "train.finetuning_type=freeze", "train.freeze.trainable_layers=0")


def test_freeze_trains_the_top_layer_and_saves_a_whole_model(tmp_path: Path) -> None:
    t = train_method(tmp_path, "train.finetuning_type=freeze", "train.freeze.trainable_layers=1")
    assert t.method.artifact_kind == "model"
    assert changed(t) == set(t.before) == {n for n in t.before if n.startswith("model.layers.1.")}
    assert all(math.isfinite(x) for x in losses(t))
    saved = load_model(t.saved, dtype="float32", device="cpu")
    base = dict(load_model(t.base, dtype="float32", device="cpu").named_parameters())
    for name, param in saved.named_parameters():  # frozen weights are the base's, bit for bit
        assert torch.equal(param, base[name]) != name.startswith("model.layers.1."), name
    assert torch.allclose(logits(saved), logits(t.model), atol=1e-6)
