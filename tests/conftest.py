"""Shared fixtures: an isolated ftflow cache, tracking store and Prefect home for the test session."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The suite runs on pytest-xdist workers, a whole file per worker (pyproject: -n auto --dist loadfile).
# Files that take minutes go first, so that no long file starts last and runs alone at the end; the
# rest keep their order. A scheduling hint only: a stale name costs time, never correctness.
LONGEST_FIRST = (  # by the summed durations of a full run (pytest --durations)
    "test_e2e.py",
    "test_stack_postgres.py",
    "test_serve_vllm.py",
    "test_recipes.py",
    "test_promote.py",
    "test_pref_stages.py",
    "test_webui_browser.py",
    "test_webui_jobs.py",
    "test_webui_chat.py",
    "test_builtin_families.py",
    "test_distributed.py",
    "test_rl_stages.py",
    "test_stage_method_matrix.py",
    "test_quantize.py",
    "test_train.py",
    "test_flow.py",
    "test_serve_follow.py",
    "test_evaluate.py",
    "test_streaming.py",
    "test_export.py",
)
MAX_WORKERS = 4  # each worker may start Prefect, MLflow or vLLM servers; more would only contend


def pytest_configure(config: pytest.Config) -> None:
    # A suite started in the background by a script (`pytest &`) inherits SIGINT ignored, and so would
    # every `ft` the Ctrl-C tests start; they need the terminal's default
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Isolation before anything imports ftcore / prefect / mlflow: a fresh cache per session, so no
    # artifact made by older code is reused (the built-in models are rebuilt, a few seconds each).
    # FTFLOW_TEST_HOME keeps one across sessions for quicker local iteration.
    home = Path(os.environ.get("FTFLOW_TEST_HOME") or tempfile.mkdtemp(prefix="ftflow-test-"))
    os.environ["FTFLOW_HOME"] = str(home / "ftflow")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = str(home / "hf")
    os.environ["MODELSCOPE_CACHE"] = str(home / "modelscope")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh Prefect home per session: its result store holds task caches that must not leak across runs.
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="ftflow-prefect-")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core (tests pin torch to one thread each), at most MAX_WORKERS."""
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


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


@pytest.fixture(scope="session")
def prefect_local():
    """One temporary Prefect server for the session's flow tests, stopped before pytest closes its streams."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """(url, folder) of a fresh `mlflow server` with its own sqlite store and artifact folder."""
    from tests.helpers import mlflow_server_at

    root = tmp_path / "server"
    with mlflow_server_at(root) as url:
        yield url, root
