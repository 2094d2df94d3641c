"""Step reports and the addresses that link Prefect and MLflow pages (built by ftcore, shown by the
Prefect tasks; the flow tests check them in the Prefect API)."""

from __future__ import annotations

from pathlib import Path

from ftcore.artifacts import Artifact
from ftcore.links import mlflow_artifact_url, mlflow_model_version_url, mlflow_run_url, prefect_flow_run_url
from ftcore.plots import plot_loss_curve
from ftcore.steps.report import step_report


def test_a_report_says_what_where_and_the_numbers(tmp_path: Path) -> None:
    png = plot_loss_curve([{"loss": 2.0, "step": 1}, {"loss": 1.0, "step": 2}], tmp_path / "loss_curve.png")
    artifact = Artifact(
        kind="adapter",
        path="/work/job/train-1/model",
        fingerprint="0123456789abcdef0123",
        metadata={
            "key": "hidden",
            "global_step": 8,
            "final_loss": 1.23456,
            "template": "qwen",
            "resumed_from": None,
            "metrics": {"train_runtime": 3.5},
            "plots": {"loss_curve": str(png)},
            "tags": {"a": "b"},
        },
    )
    text = step_report("job", "train", "Fine-tune the base model.", artifact, "extra | page")
    assert text.startswith("## train · job\n\nFine-tune the base model.\n")
    assert "**Output** (adapter): `/work/job/train-1/model`" in text and "`0123456789abcdef`" in text
    assert (
        "| global_step | 8 |" in text and "| final_loss | 1.235 |" in text and "| template | qwen |" in text
    )
    assert "| train_runtime | 3.5 |" in text
    assert "hidden" not in text and "resumed_from" not in text and "| tags |" not in text
    assert "![loss_curve](data:image/png;base64,iVBOR" in text  # the PNG inline: no server needed
    assert text.rstrip().endswith("extra | page")


def test_links_exist_only_for_servers() -> None:
    server = "http://mlflow.internal:5000/"
    assert mlflow_run_url(server, "3", "abc") == "http://mlflow.internal:5000/#/experiments/3/runs/abc"
    assert (
        mlflow_model_version_url(server, "my model", 2)
        == "http://mlflow.internal:5000/#/models/my%20model/versions/2"
    )
    assert mlflow_artifact_url(server, "abc", "plots/loss_curve.png") == (
        "http://mlflow.internal:5000/get-artifact?path=plots%2Floss_curve.png&run_uuid=abc"
    )
    sqlite = "sqlite:////tmp/mlflow.db"
    assert mlflow_run_url(sqlite, "3", "abc") is None and mlflow_artifact_url(sqlite, "abc", "x") is None
    assert prefect_flow_run_url("http://127.0.0.1:4200/", "f1") == "http://127.0.0.1:4200/runs/flow-run/f1"
    assert prefect_flow_run_url(None, "f1") is None
