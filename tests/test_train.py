"""Training on the tiny model: what changes, what is written, and resuming from checkpoints."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from ftcore import steps
from ftcore.artifacts import read_manifest
from ftcore.config import PipelineConfig
from ftcore.config.sections import LoraConfig
from ftcore.errors import ConfigError, FtflowError
from ftcore.steps.common import step_dir
from ftcore.steps.keys import train_key
from ftcore.train.checkpoints import (
    is_complete_checkpoint,
    last_complete_checkpoint,
    prune_checkpoints,
    resolve_resume,
)
from ftcore.train.launch import TrainingProcessError
from ftcore.train.lock import holder
from ftcore.train.methods import METHODS
from tests.helpers import REPO, prepared_inputs, small_config


@pytest.fixture()
def prepared(tmp_path: Path):
    cfg = small_config(tmp_path / "job", "train.report_to=none")
    model, data = prepared_inputs(cfg)
    return cfg, model, data


def test_lora_trains_adapter_and_leaves_base_untouched(prepared) -> None:
    cfg, model, data = prepared
    base_before = load_file(Path(model.path) / "model.safetensors")
    trained = steps.train(cfg, model, data)

    assert trained.kind == "adapter"
    assert trained.metadata["global_step"] == 8
    weights = load_file(Path(trained.path) / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero: training must move it"
    base_after = load_file(Path(model.path) / "model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    checkpoints = sorted(p.name for p in (Path(trained.path).parent / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-8"], "train.keep_checkpoints=1 keeps only the last checkpoint"
    assert (Path(trained.path) / "chat_template.jinja").is_file()


def test_full_finetuning_changes_the_weights(tmp_path: Path) -> None:
    cfg = small_config(
        tmp_path / "job", "train.report_to=none", "train.finetuning_type=full", "train.max_steps=3"
    )
    model, data = prepared_inputs(cfg)
    trained = steps.train(cfg, model, data)

    assert trained.kind == "model"
    before = load_file(Path(model.path) / "model.safetensors")
    after = load_file(Path(trained.path) / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    assert (Path(trained.path) / "generation_config.json").is_file()


def test_finished_training_is_reused_not_repeated(prepared) -> None:
    cfg, model, data = prepared
    first = steps.train(cfg, model, data)
    manifest = Path(first.path).parent / "ftflow-manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = steps.train(cfg, model, data)
    assert again == first
    assert manifest.stat().st_mtime_ns == stamp


def test_auto_resume_continues_from_last_complete_checkpoint(prepared) -> None:
    cfg, model, data = prepared
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"keep_checkpoints": 2})})
    trained = steps.train(cfg, model, data)
    stage = Path(trained.path).parent
    # Make it look like a run killed after step 4: the final model, manifest and later checkpoint gone,
    # plus a half-written checkpoint-6 that must not be trusted.
    (stage / "ftflow-manifest.json").unlink()
    for path in (stage / "model", stage / "checkpoints" / "checkpoint-8"):
        import shutil

        shutil.rmtree(path)
    half = stage / "checkpoints" / "checkpoint-6"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"partial")
    (half / "trainer_state.json").write_text('{"global_step": 6, "log_hist')

    assert last_complete_checkpoint(stage / "checkpoints").name == "checkpoint-4"
    resumed = steps.train(cfg, model, data)
    assert resumed.metadata["resumed_from"].endswith("checkpoint-4")
    assert resumed.metadata["global_step"] == 8
    state = json.loads((stage / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    logged_steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged_steps == [2, 4, 6, 8]


def test_resume_setting_values(tmp_path: Path) -> None:
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("auto", tmp_path / "missing") is None
    with pytest.raises(Exception, match="does not exist"):
        resolve_resume(str(tmp_path / "nope"), tmp_path)
    bad = tmp_path / "checkpoint-3"
    bad.mkdir()
    assert not is_complete_checkpoint(bad)
    with pytest.raises(Exception, match="not a complete checkpoint"):
        resolve_resume(str(bad), tmp_path)


def test_output_dir_of_another_config_is_not_mixed_in(prepared, tmp_path: Path) -> None:
    cfg, model, data = prepared
    out = tmp_path / "shared-out"
    steps.train(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": str(out)})}), model, data
    )
    other = cfg.train.model_copy(update={"output_dir": str(out), "learning_rate": 1e-3})
    with pytest.raises(Exception, match="different config"):
        steps.train(cfg.model_copy(update={"train": other}), model, data)
    assert read_manifest(out) is not None, "the finished run in that folder must survive the refusal"


def test_pruning_keeps_the_last_checkpoints_by_step_and_nothing_else(tmp_path: Path) -> None:
    for name in ("checkpoint-2", "checkpoint-4", "checkpoint-10", "checkpoint-x", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint-3").write_text("a file, not a checkpoint folder")
    assert {p.name for p in prune_checkpoints(tmp_path, 1)} == {"checkpoint-2", "checkpoint-4"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-10",
        "checkpoint-3",
        "checkpoint-x",
        "notes",
    ]
    assert [p.name for p in prune_checkpoints(tmp_path, 0)] == ["checkpoint-10"]
    assert prune_checkpoints(tmp_path / "missing", 0) == []


def _loss_curve(cfg: PipelineConfig) -> list[float]:
    trained = steps.train(cfg, *prepared_inputs(cfg))
    state = Path(trained.path).parent / "checkpoints" / "checkpoint-6" / "trainer_state.json"
    return [entry["loss"] for entry in json.loads(state.read_text())["log_history"] if "loss" in entry]


def test_gradient_accumulation_gives_the_same_trajectory_as_a_bigger_batch(tmp_path: Path) -> None:
    """TRL's invariant: 4 x 1 = 1 x 4 = 2 x 2. Sequences differ in length, so this only holds when the
    loss is normalized by the tokens of the whole accumulated batch, not averaged per micro-batch."""
    curves = {}
    for batch, accumulation in [(4, 1), (1, 4), (2, 2)]:
        cfg = small_config(
            tmp_path / f"{batch}x{accumulation}",
            "train.report_to=none",
            "train.max_steps=6",
            "train.logging_steps=1",
            "train.save_steps=6",
            f"train.per_device_train_batch_size={batch}",
            f"train.gradient_accumulation_steps={accumulation}",
        )
        curves[(batch, accumulation)] = _loss_curve(cfg)
    reference = curves[(4, 1)]
    assert len(reference) == 6 and reference[-1] < reference[0]
    for curve in curves.values():
        assert curve == pytest.approx(reference, abs=1e-4)


def test_lora_under_bf16_keeps_a_bf16_base_and_an_fp32_adapter(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none", "train.max_steps=4", "train.bf16=true")
    assert METHODS["lora"].load_plan(cfg.train).dtype == "bfloat16"
    full = small_config(tmp_path, "train.finetuning_type=full", "train.bf16=true").train
    assert METHODS["full"].load_plan(full).dtype == "float32"
    trained = steps.train(cfg, *prepared_inputs(cfg))
    weights = load_file(Path(trained.path) / "adapter_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in weights.values())


# --------------------------------------------------------------------------- the worker process

# The train step alone in a fresh process, on inputs prepared by the test (so it reaches its lock fast).
STEP_SCRIPT = """
import logging, sys
from pathlib import Path
from ftcore import steps
from ftcore.artifacts import Artifact
from ftcore.config import load_config
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
cfg = load_config(sys.argv[1])
model, data = (Artifact.model_validate_json(Path(p).read_text()) for p in sys.argv[2:4])
print("RESULT", steps.train(cfg, model, data).fingerprint, flush=True)
"""


def _step_process(cfg: PipelineConfig, tmp_path: Path, **popen: Any) -> subprocess.Popen:
    from ftcore.config.loader import dump_config

    model, data = prepared_inputs(cfg)
    files = [tmp_path / "cfg.yaml", tmp_path / "model.json", tmp_path / "data.json"]
    files[0].write_text(dump_config(cfg))
    files[1].write_text(model.model_dump_json())
    files[2].write_text(data.model_dump_json())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", STEP_SCRIPT, *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **popen,
    )


def _out(cfg: PipelineConfig) -> Path:
    model, data = prepared_inputs(cfg)
    return step_dir(cfg, "train", train_key(cfg, model, data), cfg.train.output_dir)


def test_two_jobs_on_one_output_folder_never_train_at_once(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none", "train.max_steps=4")
    jobs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        jobs.append(_step_process(cfg, tmp_path / name))
    outputs = [job.communicate(timeout=900) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    results = {line for stdout, _ in outputs for line in stdout.splitlines() if line.startswith("RESULT")}
    assert len(results) == 1, "both jobs return the same trained model"
    logs = [stderr for _, stderr in outputs]
    trained = [log for log in logs if "training for 4 steps" in log]
    waited = [log for log in logs if "in use by another training" in log]
    assert len(trained) == 1 and len(waited) == 1, logs
    assert "reusing finished artifact" in waited[0], "the second job takes the first one's result"


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status  # a zombie has stopped; it only waits to be reaped


@pytest.mark.parametrize("how", ["sigterm-to-the-step", "ctrl-c"])
def test_stopping_the_train_step_stops_its_worker_and_keeps_the_checkpoint(tmp_path: Path, how: str) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none", "train.max_steps=5000", "train.save_steps=2")
    out = _out(cfg)
    step = _step_process(cfg, tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while last_complete_checkpoint(out / "checkpoints") is None:
            assert step.poll() is None and time.monotonic() < deadline, step.communicate()
            time.sleep(0.1)
        worker = int(holder(out)["worker"])
        if how == "ctrl-c":
            os.killpg(step.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
        else:
            os.kill(step.pid, signal.SIGTERM)  # the step's process only; it dies without cleanup
        step.communicate(timeout=60)
        deadline = time.monotonic() + 60  # a loaded machine stops slowly
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(worker), "the training worker outlived the train step"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(step.pid, signal.SIGKILL)
    assert read_manifest(out) is None
    assert last_complete_checkpoint(out / "checkpoints") is not None, "checkpoints survive the stop"


def test_a_bad_input_found_in_the_worker_stays_a_config_error(prepared) -> None:
    cfg, model, data = prepared
    bad = cfg.model_copy(update={"train": cfg.train.model_copy(update={"lora": LoraConfig(target=["qq"])})})
    with pytest.raises(ConfigError, match=r"train\.lora\.target: qq not found"):
        steps.train(bad, model, data)


def test_a_worker_crash_reports_its_last_lines(prepared, tmp_path: Path) -> None:
    cfg, model, data = prepared
    gone = data.model_copy(update={"path": str(tmp_path / "deleted-tokenized-data")})
    with pytest.raises(TrainingProcessError, match="FileNotFoundError") as info:
        steps.train(cfg, model, gone)
    assert not isinstance(info.value, FtflowError), "a crash is retried, unlike a bad input"
    assert "its last lines" in str(info.value) and "Traceback" in str(info.value)
