"""Training on the tiny model: what changes, what is written, and resuming from checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftcore import stages
from ftcore.artifacts import read_manifest
from ftcore.config import PipelineConfig
from ftcore.train.checkpoints import is_complete_checkpoint, last_complete_checkpoint, resolve_resume
from ftcore.train.methods import METHODS
from tests.helpers import prepared_inputs, small_config


@pytest.fixture()
def prepared(tmp_path: Path):
    cfg = small_config(tmp_path / "job", "train.report_to=none")
    model, data = prepared_inputs(cfg)
    return cfg, model, data


def test_lora_trains_adapter_and_leaves_base_untouched(prepared) -> None:
    cfg, model, data = prepared
    base_before = load_file(Path(model.path) / "model.safetensors")
    trained = stages.train(cfg, model, data)

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
    trained = stages.train(cfg, model, data)

    assert trained.kind == "model"
    before = load_file(Path(model.path) / "model.safetensors")
    after = load_file(Path(trained.path) / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    assert (Path(trained.path) / "generation_config.json").is_file()


def test_finished_training_is_reused_not_repeated(prepared) -> None:
    cfg, model, data = prepared
    first = stages.train(cfg, model, data)
    manifest = Path(first.path).parent / "ftflow-manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = stages.train(cfg, model, data)
    assert again == first
    assert manifest.stat().st_mtime_ns == stamp


def test_auto_resume_continues_from_last_complete_checkpoint(prepared) -> None:
    cfg, model, data = prepared
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"keep_checkpoints": 2})})
    trained = stages.train(cfg, model, data)
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
    resumed = stages.train(cfg, model, data)
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
    stages.train(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": str(out)})}), model, data
    )
    other = cfg.train.model_copy(update={"output_dir": str(out), "learning_rate": 1e-3})
    with pytest.raises(Exception, match="different config"):
        stages.train(cfg.model_copy(update={"train": other}), model, data)
    assert read_manifest(out) is not None, "the finished run in that folder must survive the refusal"


def _loss_curve(cfg: PipelineConfig) -> list[float]:
    trained = stages.train(cfg, *prepared_inputs(cfg))
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
    trained = stages.train(cfg, *prepared_inputs(cfg))
    weights = load_file(Path(trained.path) / "adapter_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in weights.values())
