"""stage pt end to end: `ft train` on the c4_demo sample trains LoRA on text blocks and the loss falls."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftcore.artifacts import read_manifest
from tests.helpers import REPO

pytestmark = pytest.mark.slow


def test_ft_train_pt_on_c4_demo_lowers_the_loss(tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONUNBUFFERED": "1"}
    args = ["train", "configs/pt_lora.yaml", f"workdir={tmp_path / 'w'}"]
    args += ["train.max_steps=24", "train.logging_steps=2", "train.save_steps=24"]
    command = [sys.executable, "-m", "flows.cli", *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (train_dir,) = (tmp_path / "w").glob("train-*")
    manifest = read_manifest(train_dir)
    assert manifest is not None and manifest.metadata["objective"] == "pt"
    assert (train_dir / "model" / "adapter_model.safetensors").is_file()
    state = json.loads((train_dir / "checkpoints" / "checkpoint-24" / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 12 and all(map(math.isfinite, losses))  # finite, logged every 2 steps
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3  # causal-LM loss on the blocks falls
