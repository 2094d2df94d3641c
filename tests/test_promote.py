"""The promotion gate, `ft promote`, `ft rollback` and the promote step / flow, on real registries.

Versions come from real pipeline runs (run_local on the built-in tiny model), against the default
sqlite store and against a real `mlflow server`; nothing of ftflow is mocked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftcore import registry, tracking
from ftcore.artifacts import Artifact
from ftcore.config.sections import GateRule
from ftcore.errors import ConfigError, ModelNotAvailableError
from ftcore.promote import (
    FAILED,
    NOOP,
    PASSED,
    REFUSED,
    check_rule,
    promote_version,
    rollback,
)
from ftcore.steps.keys import register_key
from tests.helpers import small_config

# a quick job: 2 training steps, 8 eval rows, 2 short generations
QUICK = ("train.max_steps=2", "data.max_samples=16", "eval.max_samples=8", "eval.generation_samples=2")
QUICK += ("eval.max_new_tokens=4",)
STRICT = '[{"metric": "eval_loss", "direction": "lower", "min_improvement": 0.5, "relative": true}]'
# passes whatever two tiny models score: eval_loss may be up to 100% worse, rouge_l up to 1 lower
LENIENT = (
    '[{"metric": "eval_loss", "direction": "lower", "min_improvement": -1.0, "relative": true},'
    ' {"metric": "rouge_l", "direction": "higher", "min_improvement": -1.0}]'
)


def _rule(metric: str, direction: str, margin: float = 0.0, relative: bool = False) -> GateRule:
    return GateRule(metric=metric, direction=direction, min_improvement=margin, relative=relative)


def test_rules_take_any_metric_direction_and_margin() -> None:
    two_percent = _rule("eval_loss", "lower", 0.02, relative=True)
    assert check_rule(two_percent, 0.97, 1.0).passed  # 3% lower
    assert not check_rule(two_percent, 0.99, 1.0).passed  # 1% lower is not enough
    assert check_rule(two_percent, 0.97, 1.0).improvement == pytest.approx(0.03)
    not_lower = _rule("rouge_l", "higher")
    assert check_rule(not_lower, 0.2, 0.2).passed and not check_rule(not_lower, 0.19, 0.2).passed
    tolerant = _rule("bleu_4", "higher", -0.5)  # may be up to 0.5 worse
    assert check_rule(tolerant, 10.0, 10.4).passed and not check_rule(tolerant, 10.0, 10.6).passed
    text = check_rule(two_percent, 0.99, 1.0).describe()
    assert "eval_loss 0.99 vs 1" in text and "+1%" in text and ">= 2% better" in text and "FAIL" in text


def test_gate_is_typed_config_with_descriptions(tmp_path: Path) -> None:
    cfg = small_config(tmp_path, f"registry.gate={STRICT}", "registry.promote=true")
    assert cfg.registry.gate == [_rule("eval_loss", "lower", 0.5, relative=True)] and cfg.registry.promote
    with pytest.raises(ConfigError, match="direction"):
        small_config(tmp_path, 'registry.gate=[{"metric": "eval_loss", "direction": "down"}]')
    with pytest.raises(ConfigError, match="gate"):
        small_config(tmp_path, "registry.gate=[]")
    schema = GateRule.model_json_schema()["properties"]
    assert all(field.get("description") for field in schema.values())


def test_gate_and_promote_do_not_change_what_is_registered(tmp_path: Path) -> None:
    merged = Artifact(kind="merged", path=str(tmp_path), fingerprint="f" * 64)
    plain = small_config(tmp_path / "job")
    gated = small_config(tmp_path / "job", f"registry.gate={STRICT}", "registry.promote=true")
    assert register_key(plain, merged, None, "u") == register_key(gated, merged, None, "u")


def test_promote_without_evaluation_fails_before_training(tmp_path: Path) -> None:
    from ftcore.steps import preflight

    with pytest.raises(ConfigError, match=r"registry.promote.*eval.enabled"):
        preflight(small_config(tmp_path / "job", "registry.promote=true", "eval.enabled=false"))


def test_champion_stack_replays_promotions_and_rollbacks() -> None:
    moves = [("promote", 1, None), ("promote", 2, 1), ("promote", 3, 2), ("rollback", 2, 3)]
    events = [{"action": a, "version": v, "previous": p} for a, v, p in moves]
    stack = registry.champion_stack
    assert stack(events) == [1, 2]
    assert stack([*events, {"action": "rollback", "version": 1, "previous": 2}]) == [1]
    # the alias moved outside ftflow (to 7) before a promotion: 7 counts as a champion before it
    assert stack([*events, {"action": "promote", "version": 4, "previous": 7}]) == [1, 2, 7, 4]
    assert stack([*events, {"action": "rollback", "version": 5, "previous": 2}]) == [1, 2, 5]


def test_promote_with_no_store_or_no_candidate_is_a_clear_error(tmp_path: Path) -> None:
    cfg = small_config(tmp_path / "job")
    with pytest.raises(ModelNotAvailableError, match="no MLflow store"):
        promote_version(cfg)
    assert not (tmp_path / "job" / "mlflow.db").exists(), "asking must not create a store"
    tracking.open_experiment(cfg.registry, cfg.workdir_path)  # an empty store
    with pytest.raises(ModelNotAvailableError, match="models:/test-model@candidate does not exist"):
        promote_version(cfg)
    with pytest.raises(ConfigError, match=r"registry\.alias"):
        promote_version(small_config(tmp_path / "job", "registry.alias=champion"))


def _client(cfg):
    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    return tracking.get_client(uri)


def _champion(client, name: str = "test-model") -> int | None:
    found = registry.get_version_by_alias(client, name, registry.CHAMPION)
    return int(found.version) if found is not None else None


def _promotion_tags(client, version: int) -> dict[str, str]:
    tags = client.get_model_version("test-model", str(version)).tags
    return {
        k.removeprefix("ftflow.promotion."): v for k, v in tags.items() if k.startswith("ftflow.promotion.")
    }


@pytest.mark.slow
def test_gate_promotes_refuses_fails_and_rolls_back(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """v1 passes against the base; again is a no-op; v2 fails a strict gate (CLI exit 1) and passes a
    lenient one; v3 likewise; two rollbacks return to v1; a version scored on another eval set is
    refused (CLI exit 2); every decision is on the version's tags and in its run's report."""
    from flows.cli import main
    from ftcore.steps import run_local

    job = tmp_path / "job"
    cfg = small_config(job, *QUICK)
    out = run_local(cfg)
    assert out["registered"].metadata["version"] == 1
    client = _client(cfg)
    v1 = client.get_model_version("test-model", "1")
    assert v1.tags[registry.EVAL_FINGERPRINT_TAG] and v1.tags[registry.EVAL_CONFIG_TAG]

    first = promote_version(cfg)
    assert first.result == PASSED and first.promoted, first.reason
    assert first.compared_with == "base:builtin:tiny-qwen2" and _champion(client) == 1
    assert "eval_loss" in first.reason and "the base model" in first.reason
    tags = _promotion_tags(client, 1)
    assert tags["result"] == PASSED and tags["reason"] == first.reason and tags["at"] == first.at
    reports = [a.path for a in client.list_artifacts(v1.run_id, "promotion")]
    assert len(reports) == 1 and reports[0].endswith(".md")
    text = Path(client.download_artifacts(v1.run_id, reports[0], str(tmp_path / "dl"))).read_text()
    assert "# Promotion of test-model version 1: passed" in text and "| eval_loss |" in text

    again = promote_version(cfg)
    assert again.result == NOOP and "already champion" in again.reason
    assert _promotion_tags(client, 1) == tags, "a no-op changes nothing"

    for lr, version in (("1e-3", 2), ("2e-3", 3)):
        job_cfg = [*QUICK, f"train.learning_rate={lr}"]
        assert run_local(small_config(job, *job_cfg))["registered"].metadata["version"] == version
        assert main(["promote", str(_yaml(tmp_path, cfg)), *job_cfg, f"registry.gate={STRICT}"]) == 1
        captured = capsys.readouterr()
        assert f"champion version {version - 1}" in captured.err and "eval_loss" in captured.err
        assert "Traceback" not in captured.err and "| eval_loss |" in captured.out
        assert _promotion_tags(client, version)["result"] == FAILED and _champion(client) == version - 1
        lenient = promote_version(small_config(job, *job_cfg, f"registry.gate={LENIENT}"))
        assert lenient.result == PASSED and lenient.compared_with == f"champion:{version - 1}"
        assert [c.metric for c in lenient.checks] == ["eval_loss", "rouge_l"]
        assert _champion(client) == version

    uri = tracking.resolve_tracking_uri(None, cfg.workdir_path)
    assert main(["rollback", "test-model", "--tracking-uri", uri]) == 0
    assert "from version 3 to version 2" in capsys.readouterr().out and _champion(client) == 2
    assert rollback(uri, "test-model").version == 1 and _champion(client) == 1
    assert main(["rollback", "test-model", "--tracking-uri", uri]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err and _champion(client) == 1
    history = json.loads(client.get_registered_model("test-model").tags[registry.HISTORY_TAG])
    assert [(e["action"], e["version"]) for e in history] == [
        ("promote", 1),
        ("promote", 2),
        ("promote", 3),
        ("rollback", 2),
        ("rollback", 1),
    ]

    # another eval set (no retraining: same train rows): v4 cannot be compared with champion v1
    other = [*QUICK, "data.eval_dataset=identity", f"registry.gate={LENIENT}"]
    assert run_local(small_config(job, *other))["registered"].metadata["version"] == 4
    assert main(["promote", str(_yaml(tmp_path, cfg)), *other]) == 2
    err = capsys.readouterr().err
    assert "promotion refused" in err and "different eval set" in err and "Traceback" not in err
    assert _promotion_tags(client, 4)["result"] == REFUSED and _champion(client) == 1


def _yaml(tmp_path: Path, cfg) -> Path:
    """The config as a YAML file, for the command line."""
    from ftcore.config import dump_config

    path = tmp_path / "job.yaml"
    path.write_text(dump_config(cfg))
    return path


@pytest.mark.slow
def test_pipeline_ends_with_the_gate_on_a_server(mlflow_server, tmp_path, monkeypatch) -> None:
    """registry.promote on a real `mlflow server`: the promote step promotes the first version, refuses
    one scored on another eval set, and rollback moves the champion there and back."""
    from ftcore.steps import run_local

    url, _root = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    cfg = small_config(tmp_path / "job", *QUICK, "registry.promote=true")
    out = run_local(cfg)
    decision = out["promotion"]
    assert decision.kind == "promotion" and decision.metadata["result"] == PASSED, decision.metadata
    assert decision.metadata["version"] == 1 and decision.metadata["promoted"]
    client = tracking.get_client(url)
    assert _champion(client) == 1
    run_id = client.get_model_version("test-model", "1").run_id
    assert [a.path for a in client.list_artifacts(run_id, "promotion")], "report stored on the server"

    out = run_local(
        small_config(tmp_path / "job", *QUICK, "registry.promote=true", "data.eval_dataset=identity")
    )
    assert out["promotion"].metadata["result"] == REFUSED and _champion(client) == 1
    assert "different eval set" in out["promotion"].metadata["reason"]
    assert rollback(url, "test-model", to=2).message.endswith("from version 1 to version 2")
    assert rollback(url, "test-model").version == 1 and _champion(client) == 1


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_local")
def test_finetune_flow_ends_with_the_gate_and_the_promote_flow_reports(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.finetune import finetune
    from flows.promote import promote

    cfg = small_config(tmp_path / "job", *QUICK, "registry.promote=true")
    result = finetune(cfg)
    states = {row["step"]: row["state"] for row in result["summary"]}
    assert list(states)[-3:] == ["register", "alias", "promote"] and states["promote"] == "Completed"
    decision = result["artifacts"]["promotion"]["metadata"]
    assert decision["result"] == PASSED and decision["version"] == 1
    assert _champion(_client(cfg)) == 1

    again = promote(cfg)  # the flow, by hand: the candidate is champion already
    assert again["result"] == NOOP and again["version"] == 1
    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=["test-model-promotion"])
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=key))
    assert found and "# Promotion of test-model version 1: already champion" in found[-1].data


def test_promotion_report_has_the_evaluation_comparison_table(tmp_path: Path) -> None:
    """The report's score table is the evaluate step's (comparison_table): base, champion, candidate,
    better value in bold; a champion scored on another eval set is shown as not comparable. Versions
    are made in a real sqlite registry with the tags the register step writes (no model needed)."""
    cfg = small_config(tmp_path / "job")
    client = _client(cfg)
    registry.ensure_registered_model(client, "test-model")

    def version(loss: float, fingerprint: str = "E") -> str:
        tags = {registry.EVAL_FINGERPRINT_TAG: fingerprint, registry.EVAL_CONFIG_TAG: "C"}
        tags |= {"metric.tuned/eval_loss": str(loss), "metric.base/eval_loss": "3.0"}
        return client.create_model_version("test-model", source=str(tmp_path), tags=tags).version

    client.set_registered_model_alias("test-model", registry.CHAMPION, version(2.0))
    client.set_registered_model_alias("test-model", "candidate", version(1.5))
    decision = promote_version(cfg)
    assert decision.result == PASSED, decision.reason
    assert "| metric | better | base | champion v1 | candidate v2 |" in decision.report
    assert "| eval_loss | lower | 3 | 2 | **1.5** |" in decision.report

    client.set_registered_model_alias("test-model", "candidate", version(1.0, fingerprint="other"))
    refused = promote_version(cfg)
    assert refused.result == REFUSED
    assert "| eval_loss | lower | 3 | n/a | **1** |" in refused.report
    assert "- champion v2: scored on another eval set or settings: not comparable" in refused.report
