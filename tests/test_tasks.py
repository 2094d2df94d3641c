"""The Prefect task layer on its own: task bodies as plain functions, cache keys, retry rules."""

from __future__ import annotations

import inspect
from pathlib import Path

import tasks
from ftcore.errors import ConfigError
from tasks.common import cache_key, retry_unless_user_error
from tests.helpers import small_config


class _State:
    def __init__(self, exc: BaseException) -> None:
        self._exc = exc

    def result(self) -> None:
        raise self._exc


def test_task_bodies_run_without_an_orchestrator(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job")
    model = tasks.fetch_model.fn(cfg)
    dataset = tasks.fetch_dataset.fn(cfg)
    tokenized = tasks.preprocess.fn(cfg, model, dataset)
    assert (model.kind, dataset.kind, tokenized.kind) == ("model", "dataset", "tokenized")
    assert tokenized.metadata["train_examples"] == 64


def test_cache_keys_follow_config_sections_and_inputs(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job")
    model, dataset = tasks.fetch_model.fn(cfg), tasks.fetch_dataset.fn(cfg)
    tokenized = tasks.preprocess.fn(cfg, model, dataset)
    faster = small_config(tmp_path / "job", "train.learning_rate=1e-3")
    elsewhere = small_config(tmp_path / "other-job")

    def key(task, config, *args):
        names = list(inspect.signature(task.fn).parameters)
        return task.cache_key_fn(None, dict(zip(names, (config, *args), strict=True)))

    assert key(tasks.preprocess, cfg, model, dataset) == key(tasks.preprocess, faster, model, dataset)
    assert key(tasks.train, cfg, model, tokenized) != key(tasks.train, faster, model, tokenized)
    assert key(tasks.train, cfg, model, tokenized) == key(tasks.train, cfg, model, tokenized)
    assert key(tasks.train, cfg, model, tokenized) != key(tasks.train, elsewhere, model, tokenized)
    logging_only = small_config(tmp_path / "job", "train.logging_steps=1", "train.save_steps=1")
    assert key(tasks.train, cfg, model, tokenized) == key(tasks.train, logging_only, model, tokenized)


def test_cache_key_defers_user_errors_to_the_task() -> None:
    def broken(cfg: object) -> str:
        raise ConfigError("bad")

    assert cache_key("x", broken)(None, {"cfg": small_config(Path("/tmp/unused"))}) is None


def test_user_errors_are_not_retried_crashes_are() -> None:
    assert retry_unless_user_error(None, None, _State(ConfigError("bad key"))) is False
    assert retry_unless_user_error(None, None, _State(RuntimeError("CUDA error: launch failure"))) is True
