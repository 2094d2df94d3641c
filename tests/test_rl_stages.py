"""grpo and ppo on the tiny model: rewards from the config, the toy reward ("e" in the completion) rises,
weights change, losses stay finite, resume continues the run; config errors come before heavy work."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

from ftcore.config import load_config
from ftcore.errors import ConfigError
from ftcore.train.rewards import resolve_reward_func, resolve_reward_model
from tests.helpers import REPO, prepared_inputs, small_config

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _toys_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rl_toys:count_e` must import in the training worker process too."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    )


@pytest.mark.parametrize(
    ("overrides", "keys"),
    [
        (["train.stage=ppo"], ("train.stage", "train.rl.reward_model")),
        (["train.stage=grpo"], ("train.stage", "train.rl.reward_funcs")),
        (
            ["train.stage=grpo", "train.rl.reward_funcs=format", "train.rl.reward_weights=[1,2]"],
            ("train.rl.reward_weights", "train.rl.reward_funcs"),
        ),
    ],
)
def test_rl_stage_without_rewards_fails_at_config_time(overrides: list[str], keys: tuple[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config({}, overrides)
    assert all(key in str(err.value) for key in keys)


def test_llamafactory_ppo_keys_map_to_train_rl() -> None:
    cfg = load_config(
        {
            "stage": "ppo",
            "reward_model": "rm",
            "ppo_epochs": 2,
            "ppo_buffer_size": 3,
            "ppo_target": 1.5,
            "ppo_score_norm": True,
            "ppo_whiten_rewards": True,
            "model_name_or_path": "builtin:tiny-qwen2",
        }
    )
    rl = cfg.train.rl
    assert (rl.reward_model, rl.ppo_epochs, rl.ppo_buffer_size, rl.ppo_target) == ("rm", 2, 3, 1.5)
    assert rl.ppo_score_norm and rl.ppo_whiten_rewards


def test_builtin_and_user_reward_functions() -> None:
    rl = load_config({}, ["train.rl.reward_length_target=4"]).train.rl
    fmt = resolve_reward_func("format", rl)
    assert fmt(completions=["<think>a</think> <answer>b</answer>", "b"]) == [1.0, 0.0]
    assert resolve_reward_func("length", rl)(completion_ids=[[1, 2, 3, 4], [1, 2], list(range(20))]) == [
        1.0,
        0.5,
        -1.0,
    ]
    exact = resolve_reward_func("exact_answer", rl)
    assert exact(completions=["<answer> 42 </answer>", "41"], reference=["42", "42"]) == [1.0, 0.0]
    assert resolve_reward_func("rl_toys:count_e", rl)(completions=["eel", "x"]) == [2.0, 0.0]
    for bad in ("nope", "no_such_module:f", "rl_toys:missing"):
        with pytest.raises(ConfigError, match=r"train\.rl\.reward_funcs"):
            resolve_reward_func(bad, rl)


def test_toy_reward_model_scores_the_count(tmp_path: Path, tiny_qwen2: Path) -> None:
    """The toy reward model is exact, so the ppo test below measures PPO, not a noisy reward model."""
    import torch
    from rl_toys import build_reward_model, digits, marked_count
    from transformers import AutoTokenizer

    from ftcore.train.rewards import load_reward_model

    folder = build_reward_model(tiny_qwen2, tmp_path / "rm", digits)
    model, tokenizer = load_reward_model(folder), AutoTokenizer.from_pretrained(folder)
    generator = torch.Generator().manual_seed(0)
    three = tokenizer.convert_tokens_to_ids("3")
    for length in (1, 3, 40, 300):
        ids = torch.randint(0, len(tokenizer), (length,), generator=generator)
        ids[torch.rand(length, generator=generator) < 0.3] = three  # many hits, not only chance ones
        with torch.no_grad():
            got = model(input_ids=ids[None]).logits[0, 0].item()
        assert got == pytest.approx(marked_count(tokenizer, ids.tolist(), digits), abs=2e-3)


def test_reward_model_from_a_folder_and_from_the_registry(tmp_path: Path, tiny_qwen2: Path) -> None:
    from mlflow import MlflowClient
    from rl_toys import build_reward_model

    from ftcore.steps.local import preflight

    folder = build_reward_model(tiny_qwen2, tmp_path / "rm")
    assert resolve_reward_model(str(folder), "unused", tmp_path / "cache") == folder
    with pytest.raises(ConfigError, match=r"train\.rl\.reward_model"):
        resolve_reward_model(str(tmp_path / "absent"), "unused", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    for bad in ("absent", "empty"):  # preflight names the field before any heavy work
        cfg = _prompt_config(tmp_path, "train.stage=ppo", f"train.rl.reward_model={tmp_path / bad}")
        with pytest.raises(ConfigError, match=r"train\.rl\.reward_model"):
            preflight(cfg)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    client.create_registered_model("toy-rm")
    version = client.create_model_version("toy-rm", source=str(folder))
    client.set_registered_model_alias("toy-rm", "champion", version.version)
    local = resolve_reward_model("models:/toy-rm@champion", uri, tmp_path / "cache")
    assert (local / "config.json").is_file() and local.is_relative_to(tmp_path / "cache")
    from ftcore.errors import ModelNotAvailableError

    with pytest.raises(ModelNotAvailableError, match="models:/toy-rm@nope"):
        resolve_reward_model("models:/toy-rm@nope", uri, tmp_path / "cache")


def _rewards(history: list[dict]) -> list[float]:
    return [entry["reward"] for entry in history if "reward" in entry]


def _prompt_config(tmp_path: Path, *overrides: str, **train: object):
    """identity prompts (no reply needed), a few steps, reward from the rl_toys module."""
    return small_config(
        tmp_path / "job",
        "train.report_to=none",
        "data.dataset=identity",
        "data.max_samples=16",
        *overrides,
        train={"logging_steps": 1, **train},
    )


def test_grpo_user_reward_rises_and_resumes(tmp_path: Path) -> None:
    from ftcore.train.job import TrainRequest, run_training

    overrides = ["train.stage=grpo", "train.rl.reward_funcs=rl_toys:count_e", "train.rl.max_new_tokens=16"]
    cfg = _prompt_config(tmp_path, *overrides, max_steps=16, save_steps=8, learning_rate=2e-2)
    model, data = prepared_inputs(cfg)
    out = tmp_path / "grpo"
    artifact = run_training(TrainRequest.build(cfg, model, data, "k", out, None))
    rewards = _rewards(_history(out))
    assert sum(rewards[-4:]) / 4 > 1.3 * sum(rewards[:4]) / 4, rewards  # seen: 3.6 -> 5.4
    assert math.isfinite(artifact.metadata["final_loss"])
    weights = load_file(str(out / "model" / "adapter_model.safetensors"))
    assert any(name.endswith("lora_B.weight") and w.abs().sum() > 0 for name, w in weights.items())

    resumed_out = tmp_path / "grpo-resumed"
    (resumed_out / "checkpoints").mkdir(parents=True)
    import shutil

    shutil.copytree(out / "checkpoints" / "checkpoint-8", resumed_out / "checkpoints" / "checkpoint-8")
    resumed = run_training(
        TrainRequest.build(cfg, model, data, "k", resumed_out, resumed_out / "checkpoints" / "checkpoint-8")
    )
    assert resumed.metadata["global_step"] == 16 and resumed.metadata["resumed_from"]


def _history(out: Path) -> list[dict]:
    import json

    state = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    return json.loads((state / "trainer_state.json").read_text())["log_history"]


def test_ppo_mean_reward_rises_and_resumes_exactly(tmp_path: Path, tiny_qwen2: Path) -> None:
    """PPO (clipped, 2 epochs x 4 mini-batches per step) against a reward model whose score is the
    number of digits in the text (the prompts have none): the mean reward must rise while the KL to
    the reference stays bounded; a resumed run repeats the rest exactly."""
    from rl_toys import build_reward_model, digits

    from ftcore.train.job import TrainRequest, run_training

    rm = build_reward_model(tiny_qwen2, tmp_path / "rm", digits)
    overrides = [
        "train.stage=ppo",
        f"train.rl.reward_model={rm}",
        "train.rl.max_new_tokens=16",
        "train.rl.ppo_score_norm=true",
        "train.rl.ppo_init_kl_coef=0.05",
        "train.rl.ppo_epochs=2",
        "train.rl.ppo_buffer_size=4",  # 32 rollouts per step: 16 gave a rise with 2 seeds of 3
    ]
    cfg = _prompt_config(
        tmp_path,
        *overrides,
        max_steps=PPO_STEPS,
        save_steps=PPO_STEPS - 2,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        per_device_train_batch_size=8,
    )
    model, data = prepared_inputs(cfg)
    out = tmp_path / "ppo"
    artifact = run_training(TrainRequest.build(cfg, model, data, "k", out, None))
    history = _history(out)
    rewards, kls = _rewards(history), [e["kl"] for e in history]
    assert len(rewards) == PPO_STEPS and all(math.isfinite(e["loss"]) for e in history)
    third = PPO_STEPS // 3
    first, last = sum(rewards[:third]) / third, sum(rewards[-third:]) / third
    assert last > first + 1.0, rewards  # seen: 0.16 -> 2.6 digits per response (first / last 5 steps)
    assert all(0 <= kl < 64 for kl in kls), kls  # seen: at most 32 nats per response
    assert any(e["clipfrac"] > 0 for e in history)  # the clipped objective was at work
    weights = load_file(str(out / "model" / "adapter_model.safetensors"))
    assert any(name.endswith("lora_B.weight") and w.abs().sum() > 0 for name, w in weights.items())
    checkpoint = out / "checkpoints" / f"checkpoint-{PPO_STEPS}"
    assert {"value_head.safetensors", "optimizer.pt", "ppo_state.json"} <= {
        p.name for p in checkpoint.iterdir()
    }

    # resume near the end: the same seeds per step, so the rest of the run repeats exactly
    import shutil

    resumed_out = tmp_path / "ppo-resumed"
    middle = f"checkpoint-{PPO_STEPS - 2}"
    shutil.copytree(out / "checkpoints" / middle, resumed_out / "checkpoints" / middle)
    resumed = run_training(
        TrainRequest.build(cfg, model, data, "k", resumed_out, resumed_out / "checkpoints" / middle)
    )
    assert resumed.metadata["global_step"] == PPO_STEPS
    again = _rewards(_history(resumed_out))
    assert again == pytest.approx(rewards, rel=1e-4, abs=1e-4)
    metrics = artifact.metadata["metrics"]
    assert (metrics["reward_last"], metrics["kl_last"]) == pytest.approx((rewards[-1], kls[-1]))


PPO_STEPS = 16


def test_ppo_trains_with_the_methods_optimizer(tmp_path: Path, tiny_qwen2: Path) -> None:
    """LoRA+ (the method's create_optimizer hook) gives the policy its param groups; the value head
    joins as one more group at the base learning rate."""
    from ftcore.train.methods import method_for
    from ftcore.train.ppo.rollout import ValueHead
    from ftcore.train.ppo.trainer import build_optimizer
    from ftcore.train.sft import training_arguments

    cfg = small_config(tmp_path, "train.lora.loraplus_lr_ratio=16")
    method = method_for(cfg)
    policy = method.prepare(method.load(tiny_qwen2, cfg.train), cfg.train)
    head = ValueHead(policy.config.hidden_size)
    args = training_arguments(cfg.train, tmp_path / "checkpoints", method)
    optimizer = build_optimizer(method, policy, head, args, cfg.train)
    lrs = {group["lr"] for group in optimizer.param_groups}
    assert {cfg.train.learning_rate, 16 * cfg.train.learning_rate} <= lrs
    assert optimizer.param_groups[-1]["params"] == list(head.parameters())
    assert optimizer.param_groups[-1]["lr"] == cfg.train.learning_rate


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_local")
@pytest.mark.parametrize("name", ["grpo_lora", "ppo_lora"])
def test_example_configs_train_through_ft_and_the_flow(tmp_path: Path, name: str, tiny_qwen2: Path) -> None:
    import subprocess
    import sys

    from rl_toys import build_reward_model

    from flows.finetune import finetune

    rm = build_reward_model(tiny_qwen2, tmp_path / "rm")
    overrides = [
        f"workdir={tmp_path / 'cli'}",
        "train.max_steps=4",
        "train.report_to=none",
        "eval.enabled=false",
        "registry.enabled=false",
        f"data.dataset_dir={REPO / 'data'}",
    ]
    if name == "ppo_lora":
        overrides.append(f"train.rl.reward_model={rm}")
    config = str(REPO / "configs" / f"{name}.yaml")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "train", config, *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert any((tmp_path / "cli").glob("train-*/model/adapter_model.safetensors"))

    overrides[0] = f"workdir={tmp_path / 'flow'}"
    result = finetune(config, overrides=overrides)
    assert result["artifacts"]["trained"]["metadata"]["objective"] == name.split("_")[0]


def test_unsupervised_eval_rows_get_the_reply_loss() -> None:
    """grpo / ppo eval splits hold the prompt as input_ids and the reference reply as labels."""
    from ftcore.evaluate.loss import as_supervised

    row = as_supervised({"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [8, 9]})
    assert row["input_ids"] == [5, 6, 7, 8, 9] and row["labels"] == [-100, -100, -100, 8, 9]
    same_length = as_supervised({"input_ids": [5, 6], "attention_mask": [1, 1], "labels": [8, 9]})
    assert same_length["labels"] == [-100, -100, 8, 9]
    sft = {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]}
    assert as_supervised(sft) is sft
