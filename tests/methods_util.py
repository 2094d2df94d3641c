"""Training one method in-process on the tiny model, keeping the trained model in memory, so tests can
compare it with what was saved, reloaded and merged."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftcore.config import PipelineConfig
from ftcore.train.methods import TrainingMethod, method_for
from tests.helpers import prepared_inputs, small_config

# a fixed batch of token ids (every tiny model's vocabulary is larger)
IDS = torch.tensor([[3, 17, 42, 99, 7, 250, 11, 5], [8, 8, 64, 300, 21, 2, 90, 1]])


@dataclass
class Trained:
    cfg: PipelineConfig
    method: TrainingMethod
    base: Path  # the base model folder
    model: Any  # the trained model, in memory
    before: dict[str, torch.Tensor]  # trainable parameters before training
    result: dict[str, Any]  # run_sft's result
    saved: Path  # what method.save wrote


def train_method(tmp_path: Path, *overrides: str, **sections: Any) -> Trained:
    """3 steps of sft with the method the overrides pick; checkpoints off, no tracking."""
    import datasets

    from ftcore.modeling import load_tokenizer, saved_dtype
    from ftcore.train.sft import run_sft

    cfg = small_config(
        tmp_path / "job",
        "train.report_to=none",
        "train.max_steps=3",
        "train.save_steps=100",
        "train.logging_steps=1",
        "data.max_samples=24",
        *overrides,
        **sections,
    )
    model_art, data = prepared_inputs(cfg)
    method = method_for(cfg)
    torch.manual_seed(0)
    model = method.prepare(method.load(model_art.path, cfg.train), cfg.train)
    before = {n: p.detach().clone().float() for n, p in model.named_parameters() if p.requires_grad}
    train_set = datasets.load_from_disk(str(Path(data.path) / "train"))
    tokenizer = load_tokenizer(model_art.path)
    result = run_sft(model, tokenizer, train_set, cfg.train, tmp_path / "ckpt", None, [], method)
    saved = tmp_path / "saved"
    saved.mkdir()
    method.save(result["model"], saved, saved_dtype(model_art.path))
    return Trained(cfg, method, Path(model_art.path), result["model"], before, result, saved)


def logits(model: Any) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS.to(model.device)).logits.float().cpu()


def changed(trained: Trained) -> set[str]:
    """Trainable parameters whose values moved during training."""
    now = dict(trained.model.named_parameters())
    return {n for n, p in trained.before.items() if not torch.equal(p, now[n].detach().float())}


def losses(trained: Trained) -> list[float]:
    return [e["loss"] for e in trained.result["log_history"] if "loss" in e]
