"""Watching a training run: live progress records, the trackers of train.report_to, and the guards that
stop a diverged or out-of-memory run with a message a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from ftcore import steps
from ftcore.config.sections import TrainConfig
from ftcore.errors import DivergedError, OutOfMemoryError
from ftcore.steps.keys import train_key
from ftcore.train import progress
from ftcore.train.job import TrainRequest, run_training
from ftcore.train.launch import _worker_error
from tests.helpers import prepared_inputs, small_config


def _request(cfg, model, data, out: Path) -> TrainRequest:
    return TrainRequest.build(cfg, model, data, train_key(cfg, model, data), out, None)


def test_progress_records_reach_listeners_from_the_worker_process(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none")
    model, data = prepared_inputs(cfg)
    seen: list[progress.Progress] = []
    with progress.listening(seen.append):
        steps.train(cfg, model, data)  # the worker is another process: records ride on its log lines
    assert [p.step for p in seen if not p.done] == [2, 4, 6, 8]
    assert seen[-1].done and seen[-1].step == 8 and seen[-1].eta_s == 0
    for record in seen[:-1]:
        assert record.max_steps == 8 and record.loss is not None and record.loss > 0
        assert record.tokens_per_s and record.tokens_per_s > 0
        assert record.learning_rate is not None
    assert seen[0].eta_s is not None and seen[0].eta_s > 0
    assert seen[1].line().startswith("step 4/8 [##########..........]")  # half the bar


def test_progress_line_and_bar() -> None:
    record = progress.Progress(
        step=40, max_steps=100, loss=1.23456, learning_rate=1e-4, tokens_per_s=1234.0, eta_s=70
    )
    assert (
        record.line()
        == "step 40/100 [########............]  loss 1.2346  lr 1.00e-04  1.2k tok/s  eta 00:01:10"
    )
    assert progress.Progress(step=0, max_steps=0).line().endswith("eta ?")


def test_a_failing_listener_never_stops_the_others(caplog) -> None:
    got: list[int] = []

    def broken(_: progress.Progress) -> None:
        raise RuntimeError("watcher down")

    with progress.listening(broken), progress.listening(lambda p: got.append(p.step)):
        progress.publish(progress.Progress(step=3, max_steps=9))
    assert got == [3]
    assert "watcher down" in caplog.text


@pytest.mark.slow  # three trackers start up (~20 s quiet, much longer under load)
def test_report_to_writes_tensorboard_wandb_and_swanlab_offline(tmp_path: Path, monkeypatch) -> None:
    for name in ("WANDB_MODE", "SWANLAB_MODE", "WANDB_API_KEY", "SWANLAB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    cfg = small_config(tmp_path / "job", "train.report_to=tensorboard,wandb,swanlab", "train.max_steps=4")
    model, data = prepared_inputs(cfg)
    out = tmp_path / "train"
    out.mkdir()
    artifact = run_training(_request(cfg, model, data, out))

    dirs = {name: Path(path) for name, path in artifact.metadata["tracker_dirs"].items()}
    assert set(dirs) == {"tensorboard", "wandb", "swanlab"}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(dirs["tensorboard"]))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [2, 4] and all(e.value > 0 for e in losses)
    offline = list(dirs["wandb"].glob("offline-run-*/run-*.wandb"))
    assert offline and offline[0].stat().st_size > 0, "wandb ran offline into the train folder"
    assert any(p.is_file() and p.stat().st_size > 0 for p in dirs["swanlab"].rglob("*"))
    import os

    assert "WANDB_DIR" not in os.environ and "TENSORBOARD_LOGGING_DIR" not in os.environ  # restored


def test_report_to_names_are_checked() -> None:
    assert TrainConfig(report_to="all").report_to == ["mlflow", "tensorboard", "wandb", "swanlab"]
    assert TrainConfig(report_to="None").report_to == ["none"]
    with pytest.raises(ValueError, match="unknown tracker neptune; choose from mlflow, tensorboard"):
        TrainConfig(report_to="mlflow,neptune")


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    # a learning rate of 1e30 really overflows the weights after the first update
    cfg = small_config(
        tmp_path / "job",
        "train.report_to=none",
        "train.learning_rate=1e30",
        "train.max_grad_norm=1e30",
        "train.lr_scheduler_type=constant",
        "train.save_steps=1",
        "train.logging_steps=1",
        "train.max_steps=4",
    )
    model, data = prepared_inputs(cfg)
    out = tmp_path / "train"
    out.mkdir()
    with pytest.raises(
        DivergedError, match=r"training loss became (nan|inf) by step \d.*train.learning_rate"
    ):
        run_training(_request(cfg, model, data, out))
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept and kept[-1] != "checkpoint-4", "no checkpoint after the loss went non-finite"
    assert not (out / "model").exists()


class _OutOfMemoryAt(TrainerCallback):
    """Raises torch's OutOfMemoryError at a step: there is no GPU here to run out of (simulated)."""

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_names_the_settings_that_need_less(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none")
    model, data = prepared_inputs(cfg)
    out = tmp_path / "train"
    out.mkdir()
    with pytest.raises(OutOfMemoryError) as caught:
        run_training(_request(cfg, model, data, out), extra_callbacks=[_OutOfMemoryAt()])
    message = str(caught.value)
    assert "ran out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB)" in message
    for setting in (
        "per_device_train_batch_size",
        "cutoff_len",
        "train.speed.gradient_checkpointing",
        "train.quantization.bit",
    ):
        assert setting in message


def test_a_worker_killed_by_the_kernel_names_the_memory_settings(tmp_path: Path) -> None:
    from collections import deque

    error = _worker_error(-9, tmp_path / "absent.json", deque(["step 3/8"]))
    assert "killed by SIGKILL (out of memory?" in str(error) and "per_device_train_batch_size" in str(error)
