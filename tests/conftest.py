"""Shared fixtures: an isolated ftflow cache, tracking store and Prefect home for the test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # Isolation before anything imports ftcore / prefect / mlflow. The built-in models are built once
    # per session into this cache (a few seconds each).
    home = Path(os.environ.get("FTFLOW_TEST_HOME", "/tmp/ftflow-test-home"))
    os.environ.setdefault("FTFLOW_HOME", str(home / "ftflow"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(home / "hf")
    os.environ["MODELSCOPE_CACHE"] = str(home / "modelscope")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_qwen2() -> Path:
    from ftcore.builtin import ensure_builtin

    return ensure_builtin("tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_llama() -> Path:
    from ftcore.builtin import ensure_builtin

    return ensure_builtin("tiny-llama")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return REPO / "data"
