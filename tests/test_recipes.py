"""Recipes: jobs chained by `job:` references, checked at load time, run as one Prefect flow whose
jobs keep their own cached steps."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from ftcore.config.recipe import is_recipe, load_recipe
from ftcore.errors import ConfigError
from tests.helpers import REPO


def _job(model: str = "builtin:tiny-qwen2", dataset: str = "demo_alpaca", **train: Any) -> dict[str, Any]:
    """A quick sft job: 32 rows, 4 steps, no evaluation, no registry, no MLflow run."""
    return {
        "model": {"name_or_path": model},
        "data": {
            "dataset_dir": str(REPO / "data"),
            "dataset": [dataset],
            "max_samples": 32,
            "cutoff_len": 128,
        },
        "train": {
            "max_steps": 4,
            "save_steps": 4,
            "learning_rate": 5e-3,
            "per_device_train_batch_size": 8,
            "lora": {"rank": 8},
            "report_to": ["none"],
            **train,
        },
        "eval": {"enabled": False},
        "registry": {"enabled": False},
    }


def _write(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_shipped_recipe_loads_with_its_references() -> None:
    recipe = load_recipe(REPO / "configs" / "recipes" / "sft_then_sft.yaml")
    assert list(recipe.jobs) == ["general", "identity", "polish"]
    assert [(r.job, r.field, r.target, r.artifact) for r in recipe.refs] == [
        ("identity", "model.name_or_path", "general", "merged"),
        ("polish", "model.name_or_path", "identity", "merged"),
    ]
    assert recipe.downstream("identity") == ["identity", "polish"]
    names = [cfg.name for cfg in recipe.jobs.values()]
    assert names == ["sft-then-sft-general", "sft-then-sft-identity", "sft-then-sft-polish"]
    # each job its own workdir and registered model, so jobs never overwrite each other
    assert len({cfg.workdir_path for cfg in recipe.jobs.values()}) == 3
    assert [cfg.registry.model_name for cfg in recipe.jobs.values()] == names
    assert is_recipe(REPO / "configs" / "recipes" / "sft_then_sft.yaml")
    assert not is_recipe(REPO / "configs" / "quickstart.yaml")


def test_every_shipped_recipe_is_a_checked_plan(tmp_path: Path) -> None:
    """Each configs/recipes/*.yaml: references resolve to artifacts their jobs make, and every job
    (ppo's reward model stood in for) passes its preflight: data, template, model refs."""
    from ftcore.recipe import check_recipe, stand_in_config

    shipped = sorted((REPO / "configs" / "recipes").glob("*.yaml"))
    assert {p.stem for p in shipped} >= {"sft_then_dpo", "sft_rm_ppo", "sft_then_grpo", "sft_then_sft"}
    for path in shipped:
        recipe = load_recipe(path, [f"workdir={tmp_path / path.stem}"])
        check_recipe(recipe)
        assert all(stand_in_config(recipe, job) is not None for job in recipe.jobs), path.name
    ppo = load_recipe(REPO / "configs" / "recipes" / "sft_rm_ppo.yaml")
    assert [(r.job, r.field, r.target) for r in ppo.refs_of("ppo")] == [
        ("ppo", "model.name_or_path", "sft"),
        ("ppo", "train.rl.reward_model", "rm"),
    ]
    dpo = load_recipe(REPO / "configs" / "recipes" / "sft_then_dpo.yaml", ["jobs.dpo.train.pref.beta=0.2"])
    assert dpo.jobs["dpo"].train.pref.beta == 0.2 and dpo.downstream("dpo") == ["dpo"]
    assert not (tmp_path / "sft_then_dpo" / "sft").exists()  # checked, nothing trained


@pytest.mark.parametrize(
    ("jobs", "marker", "message"),
    [
        ({"a": _job(), "b": _job("job:nope")}, "job:nope", "unknown job 'nope'"),
        ({"a": _job("job:a")}, "job:a", "job 'a' refers to itself"),
        ({"a": _job("job:b"), "b": _job()}, "job:b", "listed after it; jobs run in the order listed"),
        ({"a": _job("job:b"), "b": _job("job:a")}, "job:b", "in a cycle: a -> b -> a"),
        ({"a": _job(), "b": _job("job:a/weights")}, "job:a/weights", "job 'a' has no artifact 'weights'"),
        ({"a": _job(), "b": _job("job:a b")}, "job:a b", "is not a job reference"),
    ],
)
def test_graph_errors_name_file_and_line(tmp_path: Path, jobs: dict, marker: str, message: str) -> None:
    path = _write(tmp_path / "r.yaml", {"name": "r", "workdir": str(tmp_path / "runs"), "jobs": jobs})
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert f"{path}:{_line_of(path, marker)}: model.name_or_path" in str(err.value)
    assert message in str(err.value)


def test_reference_in_a_job_file_or_flat_keys_names_that_line(tmp_path: Path) -> None:
    job_file = tmp_path / "dpo.yaml"  # LLaMA-Factory flat keys, in its own file
    job_file.write_text(
        "model_name_or_path: job:later\nstage: sft\nfinetuning_type: lora\n"
        f"dataset: demo_alpaca\ndataset_dir: {REPO / 'data'}\n"
    )
    path = _write(
        tmp_path / "r.yaml",
        {"jobs": {"first": {"config": str(job_file)}, "later": _job()}},
    )
    with pytest.raises(
        ConfigError, match=rf"^{job_file}:1: model.name_or_path: .*'later', which is listed after"
    ):
        load_recipe(path)

    # the same reference set by the recipe's overrides: the recipe's line
    path = _write(
        tmp_path / "r2.yaml",
        {
            "jobs": {
                "first": _job(),
                "second": {"config": str(job_file), "overrides": {"model.name_or_path": "job:x"}},
            }
        },
    )
    with pytest.raises(ConfigError, match=rf"^{path}:{_line_of(path, 'job:x')}: .*unknown job 'x'"):
        load_recipe(path)


def test_recipe_errors_before_any_job_runs(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    path = _write(tmp_path / "r.yaml", {"workdir": runs, "jobs": {"a": _job(), "b": _job(), "c": {"nme": 1}}})
    line = _line_of(path, "nme:")  # an inline job's bad key: the recipe's line of that key
    with pytest.raises(ConfigError, match=rf"^{path}:{line}: job 'c': unknown config key 'nme'"):
        load_recipe(path)
    twins = {"a": {**_job(), "name": "same"}, "b": {**_job(), "name": "same"}}
    with pytest.raises(ConfigError, match="jobs 'a' and 'b' share the name 'same'"):
        load_recipe(_write(tmp_path / "twins.yaml", {"workdir": runs, "jobs": twins}))
    with pytest.raises(ConfigError, match="has no job 'z'; jobs: a, b"):
        load_recipe(
            _write(tmp_path / "ok.yaml", {"jobs": {"a": _job(), "b": _job()}}), ["jobs.z.train.max_steps=2"]
        )
    twice = tmp_path / "twice.yaml"  # two jobs of one name: YAML would keep the last silently
    twice.write_text("jobs:\n  a: {model: {name_or_path: builtin:tiny-qwen2}}\n  a: {}\n")
    with pytest.raises(ConfigError, match=rf"^{twice}:3: key 'jobs.a' is given twice"):
        load_recipe(twice)
    with pytest.raises(ConfigError, match="unknown recipe key 'job'"):
        load_recipe(_write(tmp_path / "typo.yaml", {"job": {}, "jobs": {"a": _job()}}))


def test_overrides_reach_one_job(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.yaml", {"name": "r", "jobs": {"a": _job(), "b": _job("job:a")}})
    recipe = load_recipe(path, ["jobs.b.train.learning_rate=1e-4", f"workdir={tmp_path / 'w'}"])
    assert recipe.jobs["b"].train.learning_rate == 1e-4
    assert recipe.jobs["a"].train.learning_rate == 5e-3
    assert recipe.jobs["b"].workdir_path == (tmp_path / "w" / "b").resolve()


def test_a_missing_artifact_and_a_bad_later_job_fail_before_training(tmp_path: Path) -> None:
    from ftcore.recipe import check_recipe

    runs = str(tmp_path / "runs")
    quantized = {"a": _job(), "b": _job("job:a/quantized")}  # job a does not quantize
    with pytest.raises(ConfigError, match="job 'a' makes no 'quantized' artifact"):
        check_recipe(load_recipe(_write(tmp_path / "q.yaml", {"workdir": runs, "jobs": quantized})))
    unmerged = {"a": {**_job(), "export": {"merge": False}}, "b": _job("job:a")}
    with pytest.raises(ConfigError, match=r"job .a. sets export\.merge: false, so it makes an adapter"):
        check_recipe(load_recipe(_write(tmp_path / "m.yaml", {"workdir": runs, "jobs": unmerged})))
    # the last job's data set does not exist: found while the first job's inputs are only stood in for
    bad_data = {"a": _job(), "b": _job(), "c": _job("job:b", dataset="no_such_dataset")}
    with pytest.raises(ConfigError, match="no_such_dataset"):
        check_recipe(load_recipe(_write(tmp_path / "d.yaml", {"workdir": runs, "jobs": bad_data})))
    assert not (tmp_path / "runs" / "a").exists()  # nothing trained


def test_cli_shows_a_recipe_error_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from flows.cli import main

    path = _write(tmp_path / "r.yaml", {"jobs": {"a": _job("job:b"), "b": _job()}})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:") and "listed after it" in err and "Traceback" not in err


def test_merged_model_is_handed_on_by_its_weights(tmp_path: Path, tiny_qwen2: Path) -> None:
    """A rewritten model card (a new evaluation upstream) leaves the view, and so the downstream
    fetch key, unchanged; new weights make a new view."""
    import shutil

    from ftcore.artifacts import Artifact
    from ftcore.config import load_config
    from ftcore.recipe import weights_view
    from ftcore.steps.keys import fetch_model_key

    merged = tmp_path / "merged"
    shutil.copytree(tiny_qwen2, merged)
    (merged / "README.md").write_text("card v1")
    upstream = load_config({"name": "up", "workdir": str(tmp_path / "up")})
    artifact = Artifact(kind="merged", path=str(merged), fingerprint="f1", metadata={"weights_key": "w" * 64})
    view = weights_view(upstream, artifact)
    assert not (view / "README.md").exists() and (view / "config.json").is_file()
    weights = next(view.glob("*.safetensors"))
    assert weights.stat().st_ino == (merged / weights.name).stat().st_ino  # hard link: no copy
    key = fetch_model_key(load_config({"model": {"name_or_path": str(view)}}))

    (merged / "README.md").write_text("card v2 with new scores")
    assert weights_view(upstream, artifact.model_copy(update={"fingerprint": "f2"})) == view
    assert fetch_model_key(load_config({"model": {"name_or_path": str(view)}})) == key
    other = weights_view(upstream, artifact.model_copy(update={"metadata": {"weights_key": "v" * 64}}))
    assert other != view and os.path.isdir(other)
    # new upstream weights: the downstream fetch (and so its training) runs again
    assert fetch_model_key(load_config({"model": {"name_or_path": str(other)}})) != key


def _states(result: dict, job: str) -> dict[str, str]:
    return {row["step"]: row["state"] for row in result["jobs"][job]["summary"]}


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ~4 min idle (5 trainings); 24 min under load 15 (workers start slowly)
@pytest.mark.usefixtures("prefect_local")
def test_sft_dpo_sft_recipe_reruns_only_the_changed_job_and_what_follows(tmp_path: Path) -> None:
    """sft -> dpo (the sft model as start and as frozen reference) -> sft on the dpo model, as one
    Prefect flow; then a new dpo beta: sft comes from cache, dpo and the job after it run again."""
    from flows.recipe import recipe

    dpo = _job("job:sft", dataset="dpo_en_demo", stage="dpo", pref={"beta": 0.1, "ref_model": "job:sft"})
    path = _write(
        tmp_path / "chain.yaml",
        {
            "name": "chain",
            "workdir": str(tmp_path / "runs"),
            "jobs": {"sft": _job(), "dpo": dpo, "polish": _job("job:dpo", dataset="identity")},
        },
    )
    steps = ["fetch_model", "fetch_dataset", "preprocess", "train", "merge"]
    first = recipe(str(path))
    for job in ("sft", "dpo", "polish"):
        assert _states(first, job) == dict.fromkeys(steps, "Completed"), job
    art = {job: first["jobs"][job]["artifacts"] for job in ("sft", "dpo", "polish")}
    assert art["dpo"]["trained"]["metadata"]["objective"] == "dpo"
    # each job trained from the previous job's merged weights (hard links of the same files)
    for up, down in (("sft", "dpo"), ("dpo", "polish")):
        fetched = Path(art[down]["model"]["path"])
        assert fetched.parent == (tmp_path / "runs" / up).resolve() and fetched.name.startswith(
            "recipe_input-"
        )
        weights = next(fetched.glob("*.safetensors"))
        assert weights.stat().st_ino == (Path(art[up]["merged"]["path"]) / weights.name).stat().st_ino
        assert art[down]["merged"]["metadata"]["base_model_ref"] == str(fetched)

    # the dpo beta: sft from cache; dpo trains again (its inputs cached), polish takes the new model
    again = recipe(str(path), ["jobs.dpo.train.pref.beta=0.5"])
    assert _states(again, "sft") == dict.fromkeys(steps, "Cached")
    assert _states(again, "dpo") == {
        **dict.fromkeys(["fetch_model", "fetch_dataset", "preprocess"], "Cached"),
        "train": "Completed",
        "merge": "Completed",
    }
    assert _states(again, "polish")["fetch_model"] == "Completed"
    assert _states(again, "polish")["train"] == "Completed"
    assert _states(again, "polish")["merge"] == "Completed"
    for job in ("dpo", "polish"):
        assert again["jobs"][job]["artifacts"]["merged"]["path"] != art[job]["merged"]["path"], job

    # the recipe's card in the Prefect UI: per job, steps run and steps from cache
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        cards = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["chain-recipe"]))
        )
    assert any("| sft | - | 0 | 5 |" in card.data for card in cards)


def test_deployment_parameter_reloads_as_the_same_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker in another folder reads the deployed recipe: jobs inline, paths absolute, references kept."""
    from flows.deploy import ENTRYPOINTS, flow_parameters

    source = REPO / "configs" / "recipes" / "sft_then_sft.yaml"
    monkeypatch.chdir(REPO)
    loaded = load_recipe(source)
    param = flow_parameters("recipe", loaded)["recipe"]
    assert ENTRYPOINTS["recipe"] == "flows/recipe.py:recipe"
    where = {
        job: (cfg.workdir_path, cfg.resolve_input(cfg.data.dataset_dir)) for job, cfg in loaded.jobs.items()
    }
    monkeypatch.chdir(tmp_path)  # a worker elsewhere
    again = load_recipe(param)
    assert [(r.job, r.field, r.target) for r in again.refs] == [
        (r.job, r.field, r.target) for r in loaded.refs
    ]
    for job, cfg in loaded.jobs.items():
        moved = again.jobs[job]
        assert (moved.workdir_path, moved.resolve_input(moved.data.dataset_dir)) == where[job]
        assert moved.registry.model_name == cfg.registry.model_name and moved.train == cfg.train


def test_config_show_prints_the_resolved_recipe(capsys: pytest.CaptureFixture) -> None:
    from flows.cli import main

    path = REPO / "configs" / "recipes" / "sft_then_sft.yaml"
    assert main(["config", "show", str(path), "jobs.polish.train.learning_rate=1e-3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["jobs"]["polish"]["model"]["name_or_path"] == "job:identity"
    assert shown["jobs"]["polish"]["train"]["learning_rate"] == 1e-3
    assert shown["jobs"]["general"]["data"]["dataset"] == ["demo_alpaca"]


def test_hand_over_and_reward_cache_never_replace_a_folder_ftflow_did_not_make(
    tmp_path: Path, tiny_qwen2: Path
) -> None:
    """The recipe's weights view and the reward model download cache rename a finished folder into
    place: where that place already holds someone else's files, they are refused and kept."""
    from mlflow import MlflowClient

    from ftcore.artifacts import Artifact
    from ftcore.config import load_config
    from ftcore.recipe import VIEW_STEP, weights_view
    from ftcore.train.rewards import cache_folder_name, resolve_reward_model

    upstream = load_config({"name": "up", "workdir": str(tmp_path / "up")})
    merged = Artifact(
        kind="merged", path=str(tiny_qwen2), fingerprint="f", metadata={"weights_key": "k" * 64}
    )
    mine = upstream.workdir_path / f"{VIEW_STEP}-{'k' * 12}"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"recipe hand-over of job 'up': .* ftflow did not write"):
        weights_view(upstream, merged)
    assert (mine / "notes.txt").read_text() == "mine" and not (mine / "config.json").exists()

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    client.create_registered_model("team rm")
    version = client.create_model_version("team rm", source=str(tiny_qwen2))
    client.set_registered_model_alias("team rm", "champion", version.version)
    cache = tmp_path / "train" / "reward_model"
    theirs = cache / cache_folder_name("team rm") / str(version.version)
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("theirs")
    with pytest.raises(ConfigError, match=r"train\.rl\.reward_model \(download cache\): .* did not write"):
        resolve_reward_model("models:/team rm@champion", uri, cache)
    assert (theirs / "notes.txt").read_text() == "theirs"
    (theirs / "notes.txt").unlink()  # an empty folder holds nothing to lose: filled
    assert (resolve_reward_model("models:/team rm@champion", uri, cache) / "config.json").is_file()
    assert cache_folder_name("..") != ".." and "/" not in cache_folder_name("a/../b")
