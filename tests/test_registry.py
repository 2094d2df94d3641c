"""ftcore.tracking and ftcore.registry against real sqlite MLflow stores (no mocks).

One store per module: creating the sqlite schema costs a second or two, every call after that is
milliseconds. Tests use their own experiment / model names so they do not depend on each other.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from pydantic import BaseModel, SecretStr

from ftcore import registry, tracking
from ftcore.config.sections import RegistryConfig


def _path_of(uri: str) -> Path:
    return Path(url2pathname(urlparse(uri).path)).resolve()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str, Path]:
    """(client, experiment id, workdir) of a default sqlite store in a fresh workdir."""
    workdir = tmp_path_factory.mktemp("mlflow-workdir")
    client, exp_id = tracking.open_experiment(RegistryConfig(), workdir)
    return client, exp_id, workdir


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys, ftcore.tracking, ftcore.registry; "
        "assert 'mlflow' not in sys.modules, 'mlflow imported at import time'; "
        "assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = tracking.resolve_tracking_uri(None, tmp_path)
    assert default == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert tracking.resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://from-env:5000"
    assert tracking.resolve_tracking_uri(None, tmp_path) == "http://from-env:5000"


def test_artifact_root_only_for_local_stores(tmp_path: Path) -> None:
    assert tracking.default_artifact_root(f"sqlite:///{tmp_path}/m.db", tmp_path) == tmp_path / "mlartifacts"
    assert tracking.default_artifact_root("http://mlflow:5000", tmp_path) is None
    assert tracking.default_artifact_root("databricks", tmp_path) is None


def test_experiment_and_artifacts_stay_in_workdir(store, tmp_path: Path) -> None:
    client, exp_id, workdir = store
    assert tracking.ensure_experiment(client, "ftflow", None) == exp_id  # existing: same id
    location = _path_of(client.get_experiment(exp_id).artifact_location)
    assert location == workdir.resolve() / "mlartifacts"

    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "weights.bin").write_bytes(b"\0" * 16)
    run_id = tracking.start_run(client, exp_id, "artifacts", {"stage": "test"})
    uri = tracking.log_artifacts(client, run_id, src, "model")
    tracking.end_run(client, run_id)

    landed = _path_of(uri)
    assert landed.is_relative_to(workdir.resolve() / "mlartifacts")
    assert (landed / "config.json").read_text() == "{}"
    assert (landed / "sub" / "weights.bin").stat().st_size == 16
    assert client.get_run(run_id).info.status == "FINISHED"


class _Serve(BaseModel):
    api_key: SecretStr | None = None
    port: int = 8000


def test_params_flattened_truncated_and_redacted(store) -> None:
    client, exp_id, _ = store
    secrets = ["sk-SERVE-SECRET", "hf_TOKEN_VALUE", "db-PASSWORD-1", "client-SECRET-2", "nested-SECRET-3"]
    params = {
        "model": {"name_or_path": "builtin:tiny-qwen2", "revision": None},
        "train": {"lora": {"rank": 8, "target": ["q_proj", "v_proj"]}, "learning_rate": 1e-4},
        "eval": {"max_new_tokens": 32},
        "serve": _Serve(api_key=SecretStr(secrets[0])),
        "hub": {"hf_token": secrets[1], "tokenizer": "fast"},
        "db": {"password": secrets[2], "OpenAI-Api-Key": "x"},
        "client_secret": secrets[3],
        "extra_keys": [SecretStr(secrets[4])],
        "long": "x" * 10_000,
    }
    run_id = tracking.start_run(client, exp_id, "params", None)
    tracking.log_params(client, run_id, params)
    logged = client.get_run(run_id).data.params

    assert logged["model.name_or_path"] == "builtin:tiny-qwen2"
    assert logged["model.revision"] == "None"
    assert logged["train.lora.rank"] == "8"
    assert logged["train.lora.target"] == '["q_proj", "v_proj"]'
    assert logged["eval.max_new_tokens"] == "32"  # 'tokens' is not a secret word
    assert logged["hub.tokenizer"] == "fast"
    assert logged["serve.port"] == "8000"
    for key in ("serve.api_key", "hub.hf_token", "db.password", "db.OpenAI-Api-Key", "client_secret"):
        assert logged[key] == "***", key
    assert len(logged["long"]) == tracking.MAX_PARAM_VAL_LENGTH
    dump = repr(logged)
    for secret in secrets:
        assert secret not in dump

    # A reused run: logging the same params again is a no-op, not an MLflow "param changed" error.
    tracking.log_params(client, run_id, params)
    tracking.end_run(client, run_id)


def test_metrics_skip_non_finite(store) -> None:
    client, exp_id, _ = store
    run_id = tracking.start_run(client, exp_id, "metrics", None)
    logged = tracking.log_metrics(
        client, run_id, {"loss": 1.5, "eval/loss": 2, "bad": math.nan, "worse": math.inf, "s": "x"}, step=3
    )
    assert logged == {"loss": 1.5, "eval/loss": 2.0}
    tracking.log_metrics(client, run_id, {"loss": 1.25}, step=4)
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(3, 1.5), (4, 1.25)]
    assert set(client.get_run(run_id).data.metrics) == {"loss", "eval/loss"}
    tracking.end_run(client, run_id)


def test_find_run_reuses_run_with_same_key(store) -> None:
    client, exp_id, _ = store
    assert tracking.find_run(client, exp_id, tracking.KEY_TAG, "key-a") is None
    first = tracking.get_or_start_run(client, exp_id, "train", "key-a", {"stage": "train"})
    tracking.end_run(client, first, status="FAILED")
    assert tracking.find_run(client, exp_id, tracking.KEY_TAG, "key-a") == first
    again = tracking.get_or_start_run(client, exp_id, "train", "key-a")
    assert again == first
    assert client.get_run(again).info.status == "RUNNING"
    other = tracking.get_or_start_run(client, exp_id, "train", "key-b")
    assert other != first
    for run_id in (first, other):
        tracking.end_run(client, run_id)


def test_loss_curve_png(tmp_path: Path) -> None:
    history = [{"loss": 3.0 - 0.1 * s, "step": s, "epoch": s / 10} for s in range(1, 21)]
    history += [{"eval_loss": 2.5, "step": 10}, {"eval_loss": 2.2, "step": 20}]
    history.append({"train_loss": 2.4, "train_runtime": 1.0, "step": 20})
    out = tracking.plot_loss_curve(history, tmp_path / "plots" / "loss.png")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    empty = tracking.plot_loss_curve([], tmp_path / "empty.png")
    assert empty.read_bytes().startswith(b"\x89PNG")


def test_lineage_tags() -> None:
    tags = registry.lineage_tags(
        config_hash="c" * 64,
        dataset_fingerprint="d" * 64,
        base_model_ref="hf:Qwen/Qwen2.5-0.5B",
        base_model_revision=None,
        ftflow_version="0.1.0",
        metrics={"eval_loss": 1.234567891, "perplexity": 3.4e12, "rouge_l": math.nan},
    )
    assert tags == {
        "ftflow.config_hash": "c" * 64,
        "ftflow.dataset_fingerprint": "d" * 64,
        "ftflow.base_model": "hf:Qwen/Qwen2.5-0.5B",
        "ftflow.base_model_revision": "",
        "ftflow.version": "0.1.0",
        "metric.eval_loss": "1.23457",
        "metric.perplexity": "3.4e+12",
    }
    assert registry.metrics_from_tags(tags) == {"eval_loss": 1.23457, "perplexity": 3.4e12}


def test_register_idempotent_by_key_and_alias_moves(store, tmp_path: Path) -> None:
    client, exp_id, _ = store
    name = "ftflow-test-model"
    assert registry.get_version_by_alias(client, name, "candidate") is None  # no model yet
    model_dir = tmp_path / "merged"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    run_id = tracking.start_run(client, exp_id, "register", None)
    source = tracking.log_artifacts(client, run_id, model_dir, "model")
    tags = registry.lineage_tags(
        config_hash="abc",
        dataset_fingerprint="def",
        base_model_ref="builtin:tiny-qwen2",
        base_model_revision="main",
        ftflow_version="0.1.0",
        metrics={"eval_loss": 1.5},
    )

    first = registry.register_model(client, name, run_id, source, tags, "candidate", key="k1")
    assert first == {"name": name, "version": 1, "alias": "candidate", "source": source, "run_id": run_id}
    v1 = registry.get_version_by_alias(client, name, "candidate")
    assert v1 is not None and int(v1.version) == 1
    assert v1.tags["ftflow.key"] == "k1"
    assert v1.tags["ftflow.base_model"] == "builtin:tiny-qwen2"
    assert v1.tags["metric.eval_loss"] == "1.5"

    # Same key again (a re-run): same version, no version 2; alias put back if it was moved away.
    registry.set_alias(client, name, "candidate", 1)
    again = registry.register_model(client, name, run_id, source, tags, "candidate", key="k1")
    assert again == first
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert registry.find_version_by_key(client, name, "k1").version == 1
    assert registry.find_version_by_key(client, name, "nope") is None

    second = registry.register_model(client, name, run_id, source, tags, "candidate", key="k2")
    assert second["version"] == 2
    assert int(registry.get_version_by_alias(client, name, "candidate").version) == 2
    assert registry.get_version_by_alias(client, name, "champion") is None

    # Rollback seam: an alias is a movable pointer.
    registry.set_alias(client, name, "candidate", 1)
    assert int(registry.get_version_by_alias(client, name, "candidate").version) == 1
    assert registry.register_model(client, name, run_id, source, tags, "candidate", key="k2")["version"] == 2
    assert int(registry.get_version_by_alias(client, name, "candidate").version) == 2
    assert registry.model_uri(name, "candidate") == f"models:/{name}@candidate"
    tracking.end_run(client, run_id)
