"""Preference stages rm, dpo, kto, orpo, simpo on the tiny Qwen2: each moves its own signal the right
way on a learnable set (chosen = one fixed short answer, rejected = another), through the real
preprocess (pairwise / kto processors) and train step (worker process); the rm output merges with its
score head; the LLaMA-Factory keys map; `ft train` runs each example config; the flow runs dpo."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ftcore import steps
from ftcore.config.llamafactory import flat_to_nested
from ftcore.evaluate.pairwise import preference_metrics
from ftcore.modeling import load_model, load_tokenizer
from tests.helpers import REPO, prepared_inputs, small_config, write_dataset

STAGES = ["rm", "dpo", "kto", "orpo", "simpo"]
GOOD, BAD = "Yes, it is good.", "No."


def _learnable_data(folder: Path) -> Path:
    """24 prompts; pairwise rows prefer GOOD over BAD, kto rows tag GOOD desirable and BAD not."""
    folder.mkdir(parents=True, exist_ok=True)
    prompts = [f"Question {i}: is item {i} good?" for i in range(24)]
    pairs = [
        {"conversations": [{"from": "human", "value": p}], "chosen": {"from": "gpt", "value": GOOD},
         "rejected": {"from": "gpt", "value": BAD}}
        for p in prompts
    ]  # fmt: skip
    kto = [
        {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": (BAD, GOOD)[i % 2]}],
         "label": bool(i % 2)}
        for i, p in enumerate(prompts)
    ]  # fmt: skip
    info = {
        "pairs": {
            "file_name": "pairs.json",
            "ranking": True,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
        },
        "kto": {
            "file_name": "kto.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "kto_tag": "label"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
            },
        },
    }
    return write_dataset(folder, info, {"pairs.json": pairs, "kto.json": kto})


def _config(tmp_path: Path, stage: str, *overrides: str):
    data = _learnable_data(tmp_path / "data")
    return small_config(
        tmp_path / "job",
        f"train.stage={stage}",
        "train.report_to=none",
        "train.max_steps=8",
        "train.per_device_train_batch_size=4",
        "train.learning_rate=5e-3",
        *overrides,
        data={
            "dataset_dir": str(data),
            "dataset": ["kto" if stage == "kto" else "pairs"],
            "eval_dataset": [],
            "val_size": 0.0,
            "max_samples": 24,
        },
    )


def _signal(base_path: str, head: str, train_set, pad: int, trained=None) -> dict[str, float]:
    """Pairwise metrics on the training pairs of the base (as training started: a score head drawn with
    the train seed) or of the trained model."""
    from peft import PeftModel
    from transformers import set_seed

    set_seed(42)
    if trained is not None and trained.kind == "model":
        return preference_metrics(load_model(trained.path, dtype="float32", head=head), train_set, pad)
    model = load_model(base_path, dtype="float32", head=head)
    if trained is not None:
        model = PeftModel.from_pretrained(model, trained.path)
    return preference_metrics(model, train_set, pad)


def _train_and_measure(cfg):
    import datasets

    model, data = prepared_inputs(cfg)
    train_set = datasets.load_from_disk(str(Path(data.path) / "train"))
    pad = load_tokenizer(model.path).pad_token_id
    head = "score" if cfg.train.stage == "rm" else "causal_lm"
    before = _signal(model.path, head, train_set, pad)
    trained = steps.train(cfg, model, data)
    return model, trained, before, _signal(model.path, head, train_set, pad, trained)


# dpo and rm stay in the quick suite; the others (~30 s each on an idle 2-core machine) run with slow
QUICK = [s if s in ("dpo", "rm") else pytest.param(s, marks=pytest.mark.slow) for s in STAGES]


@pytest.mark.parametrize("stage", QUICK)
def test_lora_stage_moves_its_signal(tmp_path: Path, stage: str) -> None:
    cfg = _config(tmp_path, stage)
    _, trained, before, after = _train_and_measure(cfg)

    assert trained.kind == "adapter" and trained.metadata["objective"] == stage
    assert math.isfinite(trained.metadata["final_loss"])
    weights = load_file(Path(trained.path) / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at zero: training moves it"
    # dpo / orpo / simpo / kto: chosen-minus-rejected log-prob margin; rm: score margin and accuracy
    assert after["reward_margin"] > before["reward_margin"] + 0.5, (before, after)
    assert after["pairwise_accuracy"] >= before["pairwise_accuracy"]
    if stage == "rm":
        assert after["pairwise_accuracy"] == 1.0
        assert any("score" in name for name in weights), "the adapter carries the trained score head"
        assert "ref" not in json.dumps(sorted(weights))  # TRL's reference copy is not saved


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["dpo", "rm"])
def test_full_stage_trains_every_weight(tmp_path: Path, stage: str) -> None:
    cfg = _config(tmp_path, stage, "train.finetuning_type=full", "train.learning_rate=1e-4")
    model, trained, before, after = _train_and_measure(cfg)

    assert trained.kind == "model" and math.isfinite(trained.metadata["final_loss"])
    base = load_file(Path(model.path) / "model.safetensors")
    tuned = load_file(Path(trained.path) / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(base[name], tuned[name].to(base[name].dtype))
    assert after["reward_margin"] > before["reward_margin"], (before, after)
    config = json.loads((Path(trained.path) / "config.json").read_text())
    expected = "Qwen2ForSequenceClassification" if stage == "rm" else "Qwen2ForCausalLM"
    assert config["architectures"] == [expected]


@pytest.mark.slow
def test_rm_merge_keeps_the_score_head(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "rm", "train.max_steps=4")
    model, data = prepared_inputs(cfg)
    trained = steps.train(cfg, model, data)
    merged = steps.merge(cfg, model, trained)

    assert not (Path(merged.path) / "Modelfile").exists(), "a reward model is not a chat model"
    from peft import PeftModel

    ids = torch.tensor([load_tokenizer(model.path)("Question 1: is item 1 good? Yes")["input_ids"]])
    unmerged = PeftModel.from_pretrained(load_model(model.path, dtype="float32", head="score"), trained.path)
    from transformers import AutoModelForSequenceClassification

    from ftcore.train.rm import load_reward_model

    reward = AutoModelForSequenceClassification.from_pretrained(merged.path).eval()  # plain transformers
    assert reward.config.num_labels == 1
    expected = unmerged.eval()(ids).logits
    torch.testing.assert_close(reward(ids).logits, expected, atol=1e-4, rtol=1e-4)
    for form in (merged.path, trained.path):  # the merged folder and the adapter folder, one call each
        torch.testing.assert_close(load_reward_model(form)(ids).logits, expected, atol=1e-4, rtol=1e-4)


def test_llamafactory_pref_keys(tmp_path: Path) -> None:
    nested = flat_to_nested(
        {"stage": "dpo", "pref_beta": 0.2, "pref_loss": "simpo", "simpo_gamma": 1.0, "pref_ftx": 0.5}
    )
    assert nested["train"]["stage"] == "simpo"
    assert nested["train"]["pref"] == {"beta": 0.2, "simpo_gamma": 1.0, "ftx": 0.5}
    nested = flat_to_nested({"stage": "kto", "kto_chosen_weight": 2.0, "kto_rejected_weight": 0.5})
    assert nested["train"] == {"stage": "kto", "pref": {"kto_chosen_weight": 2.0, "kto_rejected_weight": 0.5}}
    nested = flat_to_nested({"stage": "dpo", "pref_loss": "hinge"})
    assert nested["train"] == {"stage": "dpo", "pref": {"loss": "hinge"}}


def test_kto_needs_two_rows_per_batch(tmp_path: Path) -> None:
    """Refused when the config loads, before any data or model: TRL's KTO pairs the rows of a batch."""
    from ftcore.errors import ConfigError

    with pytest.raises(ConfigError, match="per_device_train_batch_size"):
        _config(tmp_path, "kto", "train.per_device_train_batch_size=1")


def _ft(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "flows.cli", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_ft_train_runs_the_example_config(tmp_path: Path, stage: str) -> None:
    result = _ft(
        ["train", f"configs/{stage}_lora.yaml", f"workdir={tmp_path / 'w'}", "train.max_steps=2"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2/2" in result.stderr
    trained = next((tmp_path / "w").glob("train-*/model"))
    assert (trained / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_dpo_through_the_flow_records_pairwise_metrics_and_the_objective(tmp_path: Path) -> None:
    """`ft run` (the Prefect flow, with its own temporary server): train -> evaluate -> merge ->
    register on the learnable pairs; MLflow holds the pairwise metrics and the version's objective."""
    from ftcore import registry, tracking
    from ftcore.artifacts import read_manifest

    data = _learnable_data(tmp_path / "data")
    workdir = tmp_path / "w"
    overrides = [
        f"workdir={workdir}",
        f"data.dataset_dir={data}",
        "data.dataset=pairs",
        "data.max_samples=24",
    ]
    overrides += ["train.max_steps=8", "train.learning_rate=5e-3", "registry.model_name=tiny-dpo"]
    result = _ft(["run", "configs/dpo_lora.yaml", *overrides], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    evaluation = read_manifest(next(workdir.glob("eval-*")))
    metrics = evaluation.metadata["metrics"]
    assert metrics["tuned/reward_margin"] > metrics["base/reward_margin"]
    assert "tuned/pairwise_accuracy" in metrics and "tuned/eval_loss" not in metrics
    client = tracking.get_client(f"sqlite:///{workdir / 'mlflow.db'}")
    version = registry.get_version_by_alias(client, "tiny-dpo", "candidate")
    assert version.tags["ftflow.objective"] == "dpo"
    assert "metric.tuned/pairwise_accuracy" in version.tags
    run = client.get_run(evaluation.metadata["mlflow_run_id"])
    assert "eval/tuned/reward_margin" in run.data.metrics
    assert any(k.startswith("train/rewards/") for k in run.data.metrics), sorted(run.data.metrics)
