"""Resume, proven: a run whose worker is SIGKILLed after a checkpoint and then resumed ends with the same
weights and the same loss history as a run that was never interrupted (fp32, dropout on, several
epochs, a checkpoint between two logging steps)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftcore import steps
from ftcore.artifacts import read_manifest
from ftcore.steps.common import step_dir
from ftcore.steps.keys import train_key
from ftcore.train.checkpoints import last_complete_checkpoint
from ftcore.train.launch import TrainingProcessError
from ftcore.train.lock import holder
from tests.helpers import prepared_inputs, small_config

STEPS = 12


def _config(workdir: Path):
    # 24 rows, 4 x 2 per step: 3 steps an epoch, so the kill lands inside a later epoch;
    # checkpoints every 2 steps, losses logged every 3: a checkpoint falls inside a logging window.
    return small_config(
        workdir,
        "train.report_to=none",
        f"train.max_steps={STEPS}",
        "train.save_steps=2",
        "train.logging_steps=3",
        "train.per_device_train_batch_size=4",
        "train.gradient_accumulation_steps=2",
        "train.lora.dropout=0.1",
        "train.bf16=false",
        "data.max_samples=24",
    )


def _history(trained_path: str) -> list[float]:
    state = Path(trained_path).parent / "checkpoints" / f"checkpoint-{STEPS}" / "trainer_state.json"
    entries = json.loads(state.read_text())["log_history"]
    keys = ("step", "loss", "grad_norm", "learning_rate")
    return [float(e[k]) for e in entries if "loss" in e for k in keys]


def _train_and_kill(cfg, model, data) -> Path:
    """Train in a thread; SIGKILL the worker process as soon as its first checkpoint is complete."""
    out = step_dir(cfg, "train", train_key(cfg, model, data), cfg.train.output_dir)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            steps.train(cfg, model, data)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 600
    while thread.is_alive() and time.monotonic() < deadline:
        if last_complete_checkpoint(out / "checkpoints") is not None:
            os.kill(int(holder(out)["worker"]), signal.SIGKILL)
            break
        time.sleep(0.02)
    thread.join()
    assert failure and isinstance(failure[0], TrainingProcessError), failure
    assert "SIGKILL" in str(failure[0])
    return out


def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "straight")
    model, data = prepared_inputs(cfg)
    straight = steps.train(cfg, model, data)

    cfg = _config(tmp_path / "killed")
    out = _train_and_kill(cfg, model, data)
    assert read_manifest(out) is None, "the kill must land before the end of training"
    checkpoint = last_complete_checkpoint(out / "checkpoints")
    assert checkpoint is not None and int(checkpoint.name.split("-")[1]) < STEPS

    resumed = steps.train(cfg, model, data)
    assert resumed.metadata["resumed_from"] == str(checkpoint)
    assert resumed.metadata["global_step"] == STEPS

    ours = load_file(Path(resumed.path) / "adapter_model.safetensors")
    theirs = load_file(Path(straight.path) / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=0, msg=name)
    assert _history(resumed.path) == pytest.approx(_history(straight.path), abs=1e-5)
    assert resumed.metadata["final_loss"] == pytest.approx(straight.metadata["final_loss"], abs=1e-5)
    assert resumed.metadata["metrics"]["train_loss"] == pytest.approx(
        straight.metadata["metrics"]["train_loss"], abs=1e-5
    ), "train_loss covers the whole run, not only the steps after the resume"
