"""ftcore.tracking and ftcore.registry against real sqlite MLflow stores (no mocks).

One store per module: creating the sqlite schema costs a second or two, every call after that is
milliseconds. Tests use their own experiment / model names so they do not depend on each other.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest
from pydantic import BaseModel, SecretStr

from ftcore import registry, tracking
from ftcore.artifacts import Artifact, fingerprint_path, is_present
from ftcore.config.sections import RegistryConfig
from ftcore.plots import plot_loss_curve
from ftcore.steps.keys import register_key
from ftcore.steps.register import assign_alias, is_registered, register
from tests.helpers import small_config


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


def test_artifact_root_beside_sqlite_store_or_the_servers(tmp_path: Path) -> None:
    assert tracking.default_artifact_root(f"sqlite:///{tmp_path}/m.db") == tmp_path / "mlartifacts"
    shared = tmp_path / "shared" / "mlflow.db"
    assert tracking.default_artifact_root(f"sqlite:///{shared}?timeout=5") == shared.parent / "mlartifacts"
    assert tracking.default_artifact_root("http://mlflow:5000") is None
    assert tracking.default_artifact_root("databricks") is None


def test_experiment_and_artifacts_stay_in_workdir(store, tmp_path: Path) -> None:
    client, exp_id, workdir = store
    assert tracking.ensure_experiment(client, "ftflow", workdir / "mlartifacts") == exp_id  # existing
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
    out = plot_loss_curve(history, tmp_path / "plots" / "loss.png")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    empty = plot_loss_curve([], tmp_path / "empty.png")
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

    first = registry.register_model(client, name, run_id, source, tags, key="k1")
    assert first == {"name": name, "version": 1, "source": source, "run_id": run_id}
    assert registry.get_version_by_alias(client, name, "candidate") is None  # registering sets no alias
    registry.set_alias(client, name, "candidate", 1)
    v1 = registry.get_version_by_alias(client, name, "candidate")
    assert v1 is not None and int(v1.version) == 1
    assert v1.tags["ftflow.key"] == "k1"
    assert v1.tags["ftflow.base_model"] == "builtin:tiny-qwen2"
    assert v1.tags["metric.eval_loss"] == "1.5"
    assert registry.version_present(client, name, 1, "k1")
    assert not registry.version_present(client, name, 1, "other-key")
    assert not registry.version_present(client, name, 7, "k1")
    assert not registry.version_present(client, "no-such-model", 1, "k1")

    # Same key again (a re-run): same version, no version 2.
    again = registry.register_model(client, name, run_id, source, tags, key="k1")
    assert again == first
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert registry.find_version_by_key(client, name, "k1").version == 1
    assert registry.find_version_by_key(client, name, "nope") is None

    second = registry.register_model(client, name, run_id, source, tags, key="k2")
    assert second["version"] == 2
    assert registry.get_version_by_alias(client, name, "champion") is None

    # Rollback seam: an alias is a movable pointer.
    registry.set_alias(client, name, "candidate", 2)
    registry.set_alias(client, name, "candidate", 1)
    assert int(registry.get_version_by_alias(client, name, "candidate").version) == 1
    assert registry.model_uri(name, "candidate") == f"models:/{name}@candidate"
    tracking.end_run(client, run_id)


# --------------------------------------------------------------------------- the register stage


def _model_dir(path: Path, note: str) -> Artifact:
    """A real (tiny) model folder as the merge stage leaves it; `note` makes its content distinct."""
    from ftcore.builtin import ensure_builtin

    shutil.copytree(ensure_builtin("tiny-qwen2"), path)
    (path / "note.txt").write_text(note)
    return Artifact(kind="merged", path=str(path), fingerprint=fingerprint_path(path), metadata={})


def _adapter_dir(path: Path) -> Artifact:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ftcore.builtin import ensure_builtin

    base = AutoModelForCausalLM.from_pretrained(ensure_builtin("tiny-qwen2"))
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(path)
    return Artifact(kind="adapter", path=str(path), fingerprint=fingerprint_path(path), metadata={})


def _client(cfg):
    from mlflow import MlflowClient

    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    return MlflowClient(uri, registry_uri=uri)


def _runs(client, cfg) -> list:
    exp = client.get_experiment_by_name(cfg.registry.experiment)
    return client.search_runs([exp.experiment_id]) if exp else []


def test_register_key_ignores_the_alias(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job")
    merged = Artifact(kind="merged", path=str(tmp_path), fingerprint="f" * 64)
    staging = small_config(tmp_path / "job", "registry.alias=staging")
    assert register_key(cfg, merged, None, "u") == register_key(staging, merged, None, "u")
    renamed = small_config(tmp_path / "job", "registry.model_name=other")
    assert register_key(cfg, merged, None, "u") != register_key(renamed, merged, None, "u")


def test_versions_are_mlflow_models_with_their_own_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter and then the merged model from one training run: two versions, neither overwritten."""
    import mlflow

    cfg = small_config(tmp_path / "job")
    _store, exp_id = tracking.open_experiment(cfg.registry, cfg.workdir_path)
    client = _client(cfg)
    train_run = tracking.start_run(client, exp_id, "train", None)
    tracking.end_run(client, train_run)
    adapter = _adapter_dir(tmp_path / "adapter")
    adapter.metadata["mlflow_run_id"] = train_run
    merged = _model_dir(tmp_path / "merged", "merged")
    merged.metadata["mlflow_run_id"] = train_run

    first = register(cfg, adapter, None)
    second = register(cfg, merged, None)
    assert (first.metadata["version"], second.metadata["version"]) == (1, 2)
    assert first.metadata["source"] != second.metadata["source"]
    assert first.metadata["run_id"] == second.metadata["run_id"] == train_run
    assert client.get_run(train_run).info.status == "FINISHED"
    assert client.list_artifacts(train_run) == [], "weights are stored once: in the logged models only"

    v1 = Path(mlflow.artifacts.download_artifacts(first.metadata["source"], dst_path=str(tmp_path / "v1")))
    assert (v1 / "adapter_config.json").is_file(), "the merged upload must not overwrite the adapter"
    hf = registry.download(second.metadata["tracking_uri"], "test-model", "candidate", tmp_path / "v2")
    v2 = hf.parent
    assert (v2 / "MLmodel").is_file() and hf == v2 / "model"  # the plain Hugging Face folder, complete
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "note.txt"):
        assert (hf / name).is_file(), name
    requirements = (v2 / "requirements.txt").read_text()
    assert "transformers==" in requirements and "torchvision" not in requirements

    monkeypatch.setenv("MLFLOW_TRACKING_URI", second.metadata["tracking_uri"])  # what models:/ resolves in
    pipe = mlflow.transformers.load_model("models:/test-model@candidate")
    out = pipe("Hello", max_new_tokens=4, do_sample=False)
    assert isinstance(out[0]["generated_text"], str) and len(out[0]["generated_text"]) > len("Hello")


def test_alias_is_set_on_every_call_even_from_a_cached_result(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none")
    one = register(cfg, _model_dir(tmp_path / "m1", "lr 1e-3"), None)
    two = register(cfg, _model_dir(tmp_path / "m2", "lr 2e-3"), None)
    client = _client(cfg)
    assert int(client.get_model_version_by_alias("test-model", "candidate").version) == 2

    # What a cached `register` returns is `one` as it was; the uncached step moves the alias back.
    moved = assign_alias(cfg, one)
    assert moved.metadata["alias"] == "candidate" and moved.fingerprint == one.fingerprint
    assert int(client.get_model_version_by_alias("test-model", "candidate").version) == 1
    assert len(client.search_model_versions("name = 'test-model'")) == 2

    # A new alias is a pointer move: the same version, no upload.
    staged = register(
        small_config(tmp_path / "job", "registry.alias=staging", "train.report_to=none"),
        _model_dir(tmp_path / "m3", "lr 2e-3"),
        None,
    )
    assert staged.metadata["version"] == two.metadata["version"]
    assert int(client.get_model_version_by_alias("test-model", "staging").version) == 2
    assert len(client.search_model_versions("name = 'test-model'")) == 2
    # report_to: none: each upload had a register run of its own, and each one ended.
    assert {r.info.status for r in _runs(client, cfg)} == {"FINISHED"}


def test_cached_registration_is_checked_against_the_registry(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none")
    merged = _model_dir(tmp_path / "m", "x")
    first = register(cfg, merged, None)
    assert is_registered(cfg, first) and is_present(first)
    assert not is_registered(small_config(tmp_path / "other-job"), first)  # another store

    _client(cfg).delete_model_version("test-model", "1")
    assert not is_registered(cfg, first) and not is_present(first)
    again = register(cfg, merged, None)
    assert again.metadata["version"] == 2 and again.metadata["key"] == first.metadata["key"]
    assert is_registered(cfg, again) and is_present(again)

    shutil.rmtree(cfg.workdir_path)  # the whole store is gone: absent, and not recreated by asking
    assert not is_present(again) and not is_registered(cfg, again)
    assert not cfg.workdir_path.exists()


def test_a_failed_upload_leaves_no_run_running(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.report_to=none")
    merged = tmp_path / "broken"
    _model_dir(merged, "x")
    weights = merged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    broken = Artifact(kind="merged", path=str(merged), fingerprint=fingerprint_path(merged))
    with pytest.raises(Exception):  # noqa: B017 (whatever safetensors raises; the run is the point)
        register(cfg, broken, None)
    client = _client(cfg)
    assert [r.info.status for r in _runs(client, cfg)] == ["FAILED"]
    assert client.search_model_versions("name = 'test-model'") == []


@pytest.mark.slow
def test_learning_rates_back_and_forth_leave_the_alias_on_the_run(tmp_path: Path) -> None:
    """lr 1e-3, 2e-3, 1e-3: the third run is the first one's version, and the alias says so."""
    from ftcore.steps import run_local

    base = ("train.max_steps=2", "data.max_samples=16", "eval.enabled=false")
    reported = []
    for lr in ("1e-3", "2e-3", "1e-3"):
        out = run_local(small_config(tmp_path / "job", *base, f"train.learning_rate={lr}"))
        reported.append(out["registered"].metadata["version"])
    assert reported == [1, 2, 1]
    client = _client(small_config(tmp_path / "job"))
    assert int(client.get_model_version_by_alias("test-model", "candidate").version) == 1
    assert len(client.search_model_versions("name = 'test-model'")) == 2
    assert "RUNNING" not in {r.info.status for r in _runs(client, small_config(tmp_path / "job"))}
