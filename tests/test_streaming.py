"""data.streaming: training reads the tokenized rows in order from disk, and a killed run resumes
reading at the row its checkpoint recorded (not from row 0), ending with the weights of an
uninterrupted streaming run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file

from ftcore import steps
from ftcore.artifacts import read_manifest
from ftcore.errors import ConfigError
from ftcore.train.checkpoints import last_complete_checkpoint
from ftcore.train.streaming import POSITION_FILE, StreamedRows, resume_position
from tests.helpers import prepared_inputs, small_config
from tests.test_resume import _train_and_kill

STEPS = 6


def test_stream_reads_in_order_from_a_position_and_wraps(tmp_path: Path) -> None:
    datasets.Dataset.from_dict({"input_ids": [[i] for i in range(600)]}).save_to_disk(str(tmp_path / "d"))
    stream = StreamedRows(tmp_path / "d", start=1198)  # 1198 rows consumed = 2 passes minus 2 rows
    first = [row["input_ids"][0] for row in stream]
    assert first == [598, 599]
    assert [row["input_ids"][0] for row in stream][:3] == [0, 1, 2]  # the next pass starts at row 0
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    assert resume_position(ckpt, 8) == 32  # no position file: steps x rows per step
    (ckpt / POSITION_FILE).write_text(json.dumps({"rows": 30}))
    assert resume_position(ckpt, 8) == 30 and resume_position(None, 8) == 0


def test_streaming_needs_max_steps_and_a_stage_that_streams(tmp_path: Path) -> None:
    with pytest.raises((ConfigError, ValueError), match=r"data\.streaming needs train\.max_steps"):
        small_config(tmp_path, "data.streaming=true", "train.max_steps=-1")
    with pytest.raises((ConfigError, ValueError), match=r"supports train\.stage sft and pt"):
        small_config(tmp_path, "data.streaming=true", "train.stage=dpo")


def _config(workdir: Path):
    # 10 rows, 2 per step: the 6 steps pass the data once and then some, in order
    return small_config(
        workdir,
        "data.streaming=true",
        "train.report_to=none",
        f"train.max_steps={STEPS}",
        "train.save_steps=2",
        "train.logging_steps=1",
        "train.per_device_train_batch_size=2",
        "train.bf16=false",
        "data.max_samples=10",
    )


@pytest.mark.slow
def test_a_killed_streaming_run_resumes_at_its_data_position(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = _config(tmp_path / "straight")
    model, data = prepared_inputs(cfg)
    straight = steps.train(cfg, model, data)

    cfg = _config(tmp_path / "killed")
    out = _train_and_kill(cfg, model, data)
    assert read_manifest(out) is None, "the kill must land before the end of training"
    checkpoint = last_complete_checkpoint(out / "checkpoints")
    assert checkpoint is not None
    done = int(checkpoint.name.split("-")[1])
    assert done < STEPS
    with caplog.at_level(logging.INFO, logger="ftcore"):
        resumed = steps.train(cfg, model, data)
    assert resumed.metadata["resumed_from"] == str(checkpoint)
    # the stream restarts at the checkpoint's row, not at row 0
    assert f"from row {done * 2 % 10}" in caplog.text
    final = Path(resumed.path).parent / "checkpoints" / f"checkpoint-{STEPS}" / POSITION_FILE
    assert json.loads(final.read_text())["rows"] == STEPS * 2

    ours = load_file(Path(resumed.path) / "adapter_model.safetensors")
    theirs = load_file(Path(straight.path) / "adapter_model.safetensors")
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=0, msg=name)
