"""The finetune flow under Prefect: states, caching across runs, re-running only what changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flows.finetune import finetune
from ftcore.config import load_config
from ftcore.steps import plan
from tests.helpers import REPO, small_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_local")]

STEPS = ["fetch_model", "fetch_dataset", "preprocess", "train", "evaluate", "merge", "register"]


def _states(result: dict) -> dict[str, str]:
    return {row["step"]: row["state"] for row in result["summary"]}


def _ui_summary(key: str) -> str:
    """The markdown the Prefect UI shows for the job's latest run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:  # the newest: other tests of the session share job names
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert found, f"no Prefect artifact {key}"
    return found[0].data


def test_flow_caches_and_reruns_only_what_changed(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job")

    first = finetune(cfg)
    assert _states(first) == dict.fromkeys([*STEPS, "alias"], "Completed")
    metrics = first["artifacts"]["eval"]["metadata"]["metrics"]
    assert metrics["tuned/eval_loss"] < metrics["base/eval_loss"]

    summary = _ui_summary("test-job-summary")
    assert "| train | Completed |" in summary and "tuned/eval_loss" in summary
    comparison = _ui_summary("test-job-evaluate")  # the evaluate step's comparison.md (Step.markdown)
    assert "| metric | better | base (builtin:tiny-qwen2) | candidate (this job) |" in comparison
    assert Path(first["artifacts"]["eval"]["path"], "comparison.md").read_text().strip() in comparison
    assert comparison.startswith("## evaluate · test-job") and "**Output** (eval)" in comparison
    train_report = _ui_summary("test-job-train")  # every step has its report; train's shows the curve
    assert "| global_step | 8 |" in train_report and "![loss_curve](data:image/png;base64," in train_report
    assert _ui_summary("test-job-loss-curve").startswith("data:image/png;base64,")  # sqlite: no server
    assert _ui_summary("test-job-train-progress") == 100.0

    second = finetune(cfg)
    # every step from cache; moving the alias is an action, done again on every run
    assert _states(second) == {**dict.fromkeys(STEPS, "Cached"), "alias": "Completed"}
    assert second["artifacts"] == first["artifacts"]

    third = finetune(cfg, overrides=["train.learning_rate=2e-3"])
    states = _states(third)
    assert [states[s] for s in ("fetch_model", "fetch_dataset", "preprocess")] == ["Cached"] * 3
    assert [states[s] for s in ("train", "evaluate", "merge", "register")] == ["Completed"] * 4
    assert third["artifacts"]["registered"]["metadata"]["version"] == 2

    # back to the first learning rate: everything from cache, and the alias back on version 1
    fourth = finetune(cfg)
    assert _states(fourth)["register"] == "Cached"
    assert fourth["artifacts"]["registered"]["metadata"]["version"] == 1
    from ftcore import registry, tracking

    client = tracking.get_client(fourth["artifacts"]["registered"]["metadata"]["tracking_uri"])
    assert int(registry.get_version_by_alias(client, "test-model", "candidate").version) == 1


def test_cached_result_whose_files_are_gone_runs_again(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job", "train.max_steps=4")
    first = finetune(cfg)
    shutil.rmtree(Path(first["artifacts"]["merged"]["path"]))

    again = finetune(cfg)
    assert _states(again)["train"] == "Cached"
    assert _states(again)["merge"] == "Completed"
    assert (Path(again["artifacts"]["merged"]["path"]) / "model.safetensors").is_file()


def test_flow_takes_a_yaml_path_and_overrides(tmp_path: Path) -> None:
    overrides = [
        f"workdir={tmp_path / 'qs'}",
        f"data.dataset_dir={REPO / 'data'}",
        "data.max_samples=16",
        "train.max_steps=2",
        "eval.enabled=false",
        "registry.enabled=false",
    ]
    result = finetune(str(REPO / "configs" / "quickstart.yaml"), overrides=overrides)
    planned = [step.name for step in plan(load_config(REPO / "configs" / "quickstart.yaml", overrides))]
    assert list(_states(result)) == planned and "quantize" in planned  # the quickstart's nf4 export
    assert result["artifacts"]["merged"]["metadata"]["base_model_ref"] == "builtin:tiny-qwen2"
