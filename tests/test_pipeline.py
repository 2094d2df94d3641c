"""The steps chained without an orchestrator: learning shows, MLflow holds the record, caches hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from ftcore.builtin import BUILTIN_VERSION
from ftcore.steps import run_local
from tests.helpers import small_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("pipeline") / "job"
    cfg = small_config(workdir, "train.max_steps=40", "data.max_samples=200", "eval.max_samples=32")
    return cfg, run_local(cfg)


def test_fine_tune_lowers_held_out_loss(finished) -> None:
    _, out = finished
    metrics = out["eval"].metadata["metrics"]
    assert metrics["tuned/eval_loss"] < metrics["base/eval_loss"] - 0.5
    assert metrics["tuned/perplexity"] < metrics["base/perplexity"]
    assert (Path(out["eval"].path) / "samples.jsonl").is_file()


def test_mlflow_holds_run_version_lineage_and_alias(finished) -> None:
    cfg, out = finished
    client = MlflowClient(f"sqlite:///{cfg.workdir_path}/mlflow.db")
    registered = out["registered"].metadata
    version = client.get_model_version_by_alias("test-model", "candidate")
    assert str(version.version) == str(registered["version"])

    run = client.get_run(version.run_id)
    assert run.data.params["train.learning_rate"] == "0.005"
    assert "eval/tuned/eval_loss" in run.data.metrics
    assert "train/loss" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert len(history) >= 10, "one point per logging step"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"plots", "eval"} <= artifacts
    assert "model" not in artifacts, "weights are stored once, in the registered version's logged model"

    tags = version.tags
    assert tags["ftflow.base_model"] == "builtin:tiny-qwen2"
    assert tags["ftflow.base_model_revision"] == f"builtin-v{BUILTIN_VERSION}"
    assert tags["ftflow.dataset_fingerprint"] == out["dataset"].fingerprint
    for key in ("ftflow.config_hash", "ftflow.version", "metric.tuned/eval_loss"):
        assert tags.get(key), key
    source = Path(version.source.removeprefix("file://"))
    assert (source / "MLmodel").is_file() and (source / "model" / "model.safetensors").is_file()
    assert str(source).startswith(str(cfg.workdir_path)), "artifacts live under the workdir by default"


def test_second_run_reuses_everything(finished) -> None:
    cfg, out = finished
    train_manifest = Path(out["trained"].path).parent / "ftflow-manifest.json"
    stamp = train_manifest.stat().st_mtime_ns
    again = run_local(cfg)
    assert {k: a.path for k, a in again.items()} == {k: a.path for k, a in out.items()}
    assert train_manifest.stat().st_mtime_ns == stamp
    assert again["registered"].metadata["version"] == out["registered"].metadata["version"]


def test_new_learning_rate_retrains_but_keeps_preprocessing(finished) -> None:
    cfg, out = finished
    changed = run_local(
        cfg.model_copy(update={"train": cfg.train.model_copy(update={"learning_rate": 2e-3})})
    )
    assert changed["tokenized"].path == out["tokenized"].path
    assert changed["trained"].path != out["trained"].path
    assert changed["merged"].path != out["merged"].path
    assert changed["registered"].metadata["version"] != out["registered"].metadata["version"]


def test_eval_only_changes_re_evaluate_without_retraining(finished) -> None:
    cfg, out = finished
    train_manifest = Path(out["trained"].path).parent / "ftflow-manifest.json"
    stamp = train_manifest.stat().st_mtime_ns
    changed = run_local(
        cfg.model_copy(
            update={
                "data": cfg.data.model_copy(update={"eval_dataset": ["identity"]}),
                "train": cfg.train.model_copy(
                    update={"per_device_eval_batch_size": 2, "num_train_epochs": 9}
                ),
            }
        )
    )
    assert changed["trained"].path == out["trained"].path
    assert train_manifest.stat().st_mtime_ns == stamp, "training was not redone"
    assert changed["merged"].path == out["merged"].path
    assert changed["eval"].path != out["eval"].path
    assert (
        changed["tokenized"].metadata["train_fingerprint"] == out["tokenized"].metadata["train_fingerprint"]
    )
    assert changed["tokenized"].metadata["eval_examples"] == 20
