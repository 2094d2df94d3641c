"""Methods through the real train step (worker process) and the merge step: a QLoRA adapter is merged
into the full-precision base, a freeze-tuned model is exported whole like a full fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ftcore import steps
from ftcore.modeling import load_model
from tests.helpers import prepared_inputs, small_config

pytestmark = pytest.mark.slow  # two worker processes (~20-40 s each on a busy 2-core machine)


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        (["train.quantization.bit=4"], "adapter"),
        (["train.finetuning_type=freeze", "train.freeze.trainable_layers=1"], "model"),
    ],
)
def test_train_and_merge_each_artifact(tmp_path: Path, settings: list[str], kind: str) -> None:
    cfg = small_config(
        tmp_path,
        "train.report_to=none",
        "train.max_steps=2",
        "train.save_steps=2",
        "data.template=qwen",
        *settings,
    )
    model, data = prepared_inputs(cfg)
    trained = steps.train(cfg, model, data)
    assert trained.kind == kind
    merged = steps.merge(cfg, model, trained)
    out = Path(merged.path)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    tuned = load_model(out, dtype="float32", device="cpu")
    base = load_model(model.path, dtype="float32", device="cpu")
    ids = torch.tensor([[3, 17, 42, 99, 7]])
    with torch.no_grad():
        assert not torch.allclose(tuned(ids).logits, base(ids).logits, atol=1e-4), (
            "the tuning is in the export"
        )
