"""The step table: the one list of pipeline steps that the flow, run_local, the tasks and the CLI read."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import tasks
from ftcore.errors import ConfigError
from ftcore.steps import plan, run_local, steps
from tests.helpers import REPO, small_config

FULL = ["fetch_model", "fetch_dataset", "preprocess", "train", "evaluate", "merge", "register", "alias"]


def _names(planned) -> list[str]:
    return [step.name for step in planned]


def test_every_step_is_a_task_with_the_steps_inputs_as_parameters() -> None:
    assert list(tasks.TASKS) == [step.name for step in steps()]
    for step in steps():
        task = tasks.TASKS[step.name]
        assert task.name == step.name
        assert list(inspect.signature(task.fn).parameters) == ["cfg", *step.inputs]
        assert (task.cache_key_fn is None) == (step.key is None)
    assert tasks.train is tasks.TASKS["train"]


def test_plan_follows_the_config(tmp_path: Path) -> None:
    assert _names(plan(small_config(tmp_path))) == FULL
    off = small_config(tmp_path, "eval.enabled=false", "registry.enabled=false")
    assert _names(plan(off)) == ["fetch_model", "fetch_dataset", "preprocess", "train", "merge"]
    adapter = small_config(tmp_path, f"model.adapter_name_or_path={tmp_path}")
    assert "train" not in _names(plan(adapter)) and "adapter" in _names(plan(adapter))


def test_plan_until_keeps_only_what_the_target_needs(tmp_path: Path) -> None:
    cfg = small_config(tmp_path)
    assert _names(plan(cfg, "train")) == ["fetch_model", "fetch_dataset", "preprocess", "train"]
    assert _names(plan(cfg, "evaluate")) == [
        "fetch_model",
        "fetch_dataset",
        "preprocess",
        "train",
        "evaluate",
    ]
    # merging an adapter the user has needs neither the data nor a training
    adapter = small_config(tmp_path, f"model.adapter_name_or_path={tmp_path}")
    assert _names(plan(adapter, "merge")) == ["fetch_model", "adapter", "merge"]
    with pytest.raises(ConfigError, match="unknown pipeline step 'nope'"):
        plan(cfg, "nope")


def test_export_without_a_finished_training_says_what_to_do(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job")
    with pytest.raises(ConfigError, match="train first"):
        run_local(cfg, until="merge", lookup=["train"])
    assert not any((tmp_path / "job").glob("train-*")), "a lookup must never train"


def test_flows_and_cli_do_not_list_the_steps_themselves() -> None:
    """Adding a step is one table entry: the flow and the CLI must not name step functions."""
    for path in (REPO / "flows" / "finetune.py", REPO / "flows" / "cli.py", REPO / "tasks" / "steps.py"):
        text = path.read_text()
        for name in ("fetch_model(", "preprocess(", "steps.train(", "merge(", "register("):
            assert name not in text, f"{path.name} calls {name} directly"
