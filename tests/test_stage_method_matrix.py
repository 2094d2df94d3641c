"""Every training stage with every method, two steps each on the tiny Qwen2, in this process (no worker:
the worker is tested elsewhere): the run ends, its loss is finite and the weights it trains moved.

The stages' own signals (loss falls, margins and rewards rise) are asserted by each stage's test; here
the point is that no stage x method pairing is left untried. LLaMA-Factory's demo files feed each
stage: c4_demo (pt), alpaca_en_demo (sft), dpo_en_demo (rm, dpo, orpo, simpo), kto_en_demo (kto),
identity prompts (grpo with a built-in reward, ppo with a toy reward model)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftcore.train.job import TrainRequest, run_training
from tests.helpers import prepared_inputs, small_config

pytestmark = pytest.mark.slow  # 72 short trainings, ~5 s each on an idle 2-core machine

DATA = {
    "pt": "c4_demo",
    "sft": "alpaca_en_demo",
    "rm": "dpo_en_demo",
    "dpo": "dpo_en_demo",
    "orpo": "dpo_en_demo",
    "simpo": "dpo_en_demo",
    "kto": "kto_en_demo",
    "grpo": "identity",
    "ppo": "identity",
}
METHODS = {
    "lora": [],
    "dora": ["train.lora.use_dora=true"],
    "qlora": ["train.quantization.bit=4"],
    "freeze": ["train.finetuning_type=freeze", "train.freeze.trainable_layers=1"],
    "full": ["train.finetuning_type=full"],
    "galore": ["train.finetuning_type=full", "train.galore.enabled=true", "train.galore.rank=4"],
    "apollo": ["train.finetuning_type=full", "train.apollo.enabled=true", "train.apollo.rank=4"],
    "badam": ["train.finetuning_type=full", "train.badam.enabled=true", "train.badam.switch_interval=1"],
}


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory: pytest.TempPathFactory, tiny_qwen2: Path) -> Path:
    from rl_toys import build_reward_model

    return build_reward_model(tiny_qwen2, tmp_path_factory.mktemp("rm") / "rm")


def _stage_settings(stage: str, reward_model: Path) -> list[str]:
    if stage == "grpo":
        # a reward that differs between completions (equal rewards give GRPO no advantage to follow)
        return [
            "train.rl.reward_funcs=rl_toys:count_e",
            "train.rl.max_new_tokens=8",
            "train.rl.num_generations=2",
        ]
    if stage == "ppo":
        return [f"train.rl.reward_model={reward_model}", "train.rl.max_new_tokens=8"]
    return []


def _changed(base: Path, out: Path) -> bool:
    """Whether the trained output differs from the base: a LoRA B (zero at start) moved, or a weight."""
    adapter = out / "adapter_model.safetensors"
    if adapter.is_file():
        return any(t.abs().sum() > 0 for n, t in load_file(adapter).items() if "lora_B" in n)
    before = {}
    for file in base.glob("*.safetensors"):
        before.update(load_file(file))
    after = {}
    for file in out.glob("*.safetensors"):
        after.update(load_file(file))
    shared = [n for n in after if n in before and after[n].shape == before[n].shape]
    assert shared, f"no weight of {out} matches the base's names"
    return any(not torch.equal(after[n].float(), before[n].float()) for n in shared)


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("stage", list(DATA))
def test_stage_with_method_trains(tmp_path: Path, stage: str, method: str, reward_model: Path) -> None:
    cfg = small_config(
        tmp_path / "job",
        f"train.stage={stage}",
        f"data.dataset={DATA[stage]}",
        "data.eval_dataset=[]",
        "data.max_samples=8",
        "data.cutoff_len=64",
        "train.max_steps=2",
        "train.save_steps=2",
        "train.logging_steps=1",
        "train.per_device_train_batch_size=4",
        "train.report_to=none",
        *_stage_settings(stage, reward_model),
        *METHODS[method],
    )
    model, data = prepared_inputs(cfg)
    out = tmp_path / "out"
    artifact = run_training(TrainRequest.build(cfg, model, data, "k", out, None))
    assert artifact is not None and artifact.metadata["objective"] == stage
    loss = artifact.metadata.get("final_loss")
    assert loss is None or math.isfinite(loss), loss
    assert _changed(Path(model.path), Path(artifact.path)), f"{stage} x {method} left the weights unchanged"
