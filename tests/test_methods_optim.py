"""Full tuning with GaLore, APOLLO and BAdam (their PyPI packages): the weights move, the loss is
finite, and the saved whole model reloads to the same logits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from ftcore.modeling import load_model
from tests.methods_util import changed, logits, losses, train_method

FULL = "train.finetuning_type=full"


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        (["train.galore.enabled=true", "train.galore.rank=4", "train.galore.update_interval=2"], "galore"),
        (
            ["train.galore.enabled=true", "train.galore.layerwise=true", "train.galore.target=q_proj,v_proj"],
            "galore",
        ),
        (["train.apollo.enabled=true", "train.apollo.rank=4", "train.apollo.scale=8"], "apollo"),
        (["train.apollo.enabled=true", "train.apollo.layerwise=true"], "apollo"),
    ],
)
def test_low_rank_optimizers_train_the_full_model(tmp_path: Path, settings: list[str], name: str) -> None:
    t = train_method(tmp_path, FULL, *settings)
    assert t.method.name == name and t.method.artifact_kind == "model"
    assert changed(t) == set(t.before), "every weight trains (projected or plain AdamW)"
    assert all(math.isfinite(x) for x in losses(t))
    saved = load_model(t.saved, dtype="float32", device="cpu")
    assert torch.allclose(logits(saved), logits(t.model), atol=1e-6)


def test_badam_layer_mode_updates_one_block_at_a_time(tmp_path: Path) -> None:
    t = train_method(tmp_path, FULL, "train.badam.enabled=true", "train.badam.switch_interval=1")
    moved = changed(t)
    # 3 steps, blocks switch every step: layer 0, 1, 0; embeddings and the final norm never train
    assert moved == {n for n in t.before if n.startswith("model.layers.")}
    assert all(math.isfinite(x) for x in losses(t))
    saved = load_model(t.saved, dtype="float32", device="cpu")
    assert torch.allclose(logits(saved), logits(t.model), atol=1e-6)


def test_badam_ratio_mode_is_refused_with_the_reason(tmp_path: Path) -> None:
    from ftcore.errors import ConfigError
    from tests.helpers import small_config

    with pytest.raises(ConfigError, match=r"train\.badam\.mode=ratio: .*sparse gradients"):
        small_config(tmp_path, FULL, "train.badam.enabled=true", "train.badam.mode=ratio")
