"""Rewards for the RL stages: reward functions named in the config (grpo) and the reward model (ppo).

A reward function is called like TRL's: f(prompts, completions, completion_ids, **columns) -> one float
per completion, where the columns include `reference` (the dataset's reference response, decoded).
Built-ins are named; a user function is `pkg.module:function`, imported when training starts and
checked when the config is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftcore.config.sections import RLConfig
from ftcore.errors import ConfigError, ModelNotAvailableError

RewardFunc = Callable[..., list[float]]


def format_reward(pattern: str) -> RewardFunc:
    """1.0 when the whole completion matches `pattern` (e.g. <think>...</think><answer>...</answer>)."""
    compiled = re.compile(pattern, re.DOTALL)

    def format(completions: list[str], **kwargs: Any) -> list[float]:
        return [1.0 if compiled.match(text.strip()) else 0.0 for text in completions]

    return format


def length_reward(target: int) -> RewardFunc:
    """Closeness of the completion's token count to `target`: 1 at the target, down to -1."""

    def length(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        return [max(-1.0, 1.0 - abs(len(ids) - target) / target) for ids in completion_ids]

    return length


def exact_answer(completions: list[str], reference: list[str], **kwargs: Any) -> list[float]:
    """1.0 when the completion (or its <answer>...</answer> part) equals the reference response."""

    def answer(text: str) -> str:
        found = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
        return (found.group(1) if found else text).strip()

    return [
        1.0 if ref and answer(c) == answer(ref) else 0.0
        for c, ref in zip(completions, reference, strict=True)
    ]


def count_reward(text: str) -> RewardFunc:
    """How often `text` occurs in the completion: a toy reward that is easy to learn (tests, demos)."""

    def count(completions: list[str], **kwargs: Any) -> list[float]:
        return [float(c.count(text)) for c in completions]

    count.__name__ = f"count_{text}"
    return count


def resolve_reward_func(name: str, rl: RLConfig) -> RewardFunc:
    """The reward function a train.rl.reward_funcs entry names; an unknown name is a ConfigError."""
    if name == "format":
        return format_reward(rl.reward_format_regex)
    if name == "length":
        return length_reward(rl.reward_length_target)
    if name in ("exact_answer", "accuracy"):
        return exact_answer
    if name.startswith("count:") and len(name) > len("count:"):
        return count_reward(name[len("count:") :])
    module_name, sep, attr = name.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"train.rl.reward_funcs: unknown reward {name!r}; use format, length, exact_answer, "
            "count:TEXT or pkg.module:function"
        )
    try:
        func = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"train.rl.reward_funcs: cannot import {name!r}: {exc}") from None
    if not callable(func):
        raise ConfigError(f"train.rl.reward_funcs: {name!r} is not callable")
    return func


def reward_funcs(rl: RLConfig) -> list[RewardFunc]:
    """Every configured reward function, resolved (imports happen here)."""
    return [resolve_reward_func(name, rl) for name in rl.reward_funcs]


def check_reward_model(reference: str, tracking_uri: str) -> Any:
    """Preflight of train.rl.reward_model: a folder holding a model (config.json, or an rm job's LoRA
    adapter_config.json), or a models:/NAME@ALIAS that exists in the registry (returns its version)."""
    if not reference.startswith("models:/"):
        path = Path(reference).expanduser().absolute()
        if not path.is_dir():
            raise ConfigError(f"train.rl.reward_model: {path} is not a folder")
        if not any((path / name).is_file() for name in ("config.json", "adapter_config.json")):
            raise ConfigError(
                f"train.rl.reward_model: {path} holds no config.json or adapter_config.json (not a model "
                "folder; an rm job's output is its model/ folder)"
            )
        return None
    name, sep, alias = reference[len("models:/") :].partition("@")
    if not sep or not name or not alias:
        raise ConfigError(f"train.rl.reward_model: {reference!r}: expected models:/NAME@ALIAS")
    from ftcore.registry import get_version_by_alias
    from ftcore.tracking import get_client

    version = get_version_by_alias(get_client(tracking_uri), name, alias)
    if version is None:
        raise ModelNotAvailableError(f"train.rl.reward_model: {reference} does not exist in {tracking_uri}")
    return version


def resolve_reward_model(reference: str, tracking_uri: str, cache: Path) -> Path:
    """A local folder for train.rl.reward_model: a folder as is, models:/NAME@ALIAS downloaded from the
    registry into `cache`/NAME/VERSION (so a moved alias gives a new path, and a new train key)."""
    version = check_reward_model(reference, tracking_uri)
    if version is None:
        return Path(reference).expanduser().absolute()
    from ftcore.registry import download_source

    name = reference[len("models:/") :].partition("@")[0]
    dst = cache / cache_folder_name(name) / str(version.version)
    if not (dst / ".complete").is_file():
        from ftcore.artifacts import atomic_dir
        from ftcore.outputs import claim_output_dir

        claim_output_dir(dst, "train.rl.reward_model (download cache)")  # never replace a folder not ours
        with atomic_dir(dst) as tmp:
            download_source(tracking_uri, version.source, tmp)
            (tmp / ".complete").write_text(reference)
    return _hf_folder(dst)


def cache_folder_name(name: str) -> str:
    """A registered model's name as one folder name inside the cache: a name with '/', '..' or other
    path characters gets a safe name plus a hash of the real one, so it can never point outside."""
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        return name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")[:64]
    return f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def _hf_folder(root: Path) -> Path:
    """The folder holding config.json under a downloaded registry version."""
    if (root / "config.json").is_file():
        return root
    for config in sorted(root.rglob("config.json")):
        return config.parent
    raise ModelNotAvailableError(f"train.rl.reward_model: no config.json under {root}")


def load_reward_model(path: str | Path, trust_remote_code: bool = False) -> Any:
    """The reward model, frozen (one score per sequence): an rm job's output in any of its forms."""
    from ftcore.train.rm import load_reward_model as load_rm_output

    folder = Path(path)
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise ConfigError(f"train.rl.reward_model: {folder} has no config.json (not a model folder)")
    return load_rm_output(folder, trust_remote_code)


def with_local_reward_model(cfg: Any, cache: Path) -> Any:
    """The pipeline config with train.rl.reward_model as a local folder (a models:/ URI downloaded from
    the job's registry into `cache`); unchanged when there is no reward model."""
    reference = cfg.train.rl.reward_model
    if not reference:
        return cfg
    from ftcore.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    local = resolve_reward_model(reference, uri, cache)
    return cfg.model_copy(
        update={
            "train": cfg.train.model_copy(
                update={"rl": cfg.train.rl.model_copy(update={"reward_model": str(local)})}
            )
        }
    )
