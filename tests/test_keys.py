"""Cache keys move exactly when results can: changing X re-runs Y and only Y.

Each test computes the real keys of the real steps (fetch_dataset and preprocess run on the shipped
data and the built-in tiny model) for a base config and a variant, and checks which steps' keys moved.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ftcore import step_versions, steps
from ftcore.data import template as template_module
from ftcore.steps.keys import evaluate_key, train_key
from ftcore.train.sft import resolve_bf16
from tests.helpers import REPO, small_config

STEPS = ("fetch_dataset", "preprocess", "train", "evaluate")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys") / "job"


@pytest.fixture(scope="module")
def model(workdir: Path):
    return steps.fetch_model(small_config(workdir))


def _keys(cfg, model) -> dict[str, str]:
    """The key of each step for `cfg`, upstream artifacts made for real."""
    dataset = steps.fetch_dataset(cfg)
    data = steps.preprocess(cfg, model, dataset)
    return {
        "fetch_dataset": dataset.metadata["key"],
        "preprocess": data.metadata["key"],
        "train": train_key(cfg, model, data),
        "evaluate": evaluate_key(cfg, model, data, None),
    }


def _moved(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {step for step in STEPS if before[step] != after[step]}


@pytest.fixture(scope="module")
def base(workdir: Path, model) -> dict[str, str]:
    return _keys(small_config(workdir), model)


@pytest.mark.parametrize(
    ("overrides", "moved"),
    [
        # keys must not change when results cannot
        (["data.eval_dataset=identity"], {"fetch_dataset", "preprocess", "evaluate"}),
        (["train.per_device_eval_batch_size=2"], set()),
        (["train.num_train_epochs=7"], set()),  # max_steps=8 wins
        (["train.finetuning_type=full"], {"train"}),
        (["data.preprocessing_num_workers=2"], set()),
        (["train.logging_steps=1", "train.save_steps=2"], set()),
        # keys must change when results do, and only downstream of the change
        (["train.learning_rate=1e-3"], {"train"}),
        (["train.max_steps=-1", "train.num_train_epochs=2"], {"train"}),
        (["train.lora.rank=4"], {"train"}),
        (["eval.batch_size=2"], {"evaluate"}),
        (["data.cutoff_len=64"], {"preprocess", "train", "evaluate"}),
        (["data.max_samples=32"], {"fetch_dataset", "preprocess", "train", "evaluate"}),
        (["data.train_on_prompt=true"], {"preprocess", "train", "evaluate"}),
    ],
)
def test_changing_x_moves_exactly_the_keys_that_depend_on_it(workdir, model, base, overrides, moved) -> None:
    assert _moved(base, _keys(small_config(workdir, *overrides), model)) == moved


def test_lora_settings_do_not_key_a_full_fine_tune(workdir, model) -> None:
    full = _keys(small_config(workdir, "train.finetuning_type=full"), model)
    other_rank = _keys(small_config(workdir, "train.finetuning_type=full", "train.lora.rank=4"), model)
    assert _moved(full, other_rank) == set()
    epochs = _keys(small_config(workdir, "train.finetuning_type=full", "train.num_train_epochs=9"), model)
    assert _moved(full, epochs) == set()


def test_val_size_split_keys_both_splits(workdir, model) -> None:
    split = _keys(small_config(workdir, "data.eval_dataset=[]", "data.val_size=0.1"), model)
    other = _keys(small_config(workdir, "data.eval_dataset=[]", "data.val_size=0.2"), model)
    assert _moved(split, other) == set(STEPS)  # the held-out rows leave the train split
    seed = _keys(small_config(workdir, "data.eval_dataset=[]", "data.val_size=0.1", "data.seed=3"), model)
    assert _moved(split, seed) == set(STEPS)
    # with an eval dataset there is no split: val_size and the split seed cannot matter
    with_eval = _keys(small_config(workdir), model)
    assert _moved(with_eval, _keys(small_config(workdir, "data.val_size=0.3", "data.seed=3"), model)) == set()


def test_train_key_uses_the_resolved_precision(workdir, model, base) -> None:
    cfg = small_config(workdir)
    assert cfg.train.bf16 is None
    resolved = resolve_bf16(cfg.train)
    same = _keys(small_config(workdir, f"train.bf16={str(resolved).lower()}"), model)
    assert _moved(base, same) == set(), "bf16: null means what this machine resolves it to"
    other = _keys(small_config(workdir, f"train.bf16={str(not resolved).lower()}"), model)
    assert _moved(base, other) == {"train", "evaluate"}  # evaluation runs in the training precision


def test_data_file_edits_move_only_their_split(tmp_path: Path, workdir, model) -> None:
    data_dir = shutil.copytree(REPO / "data", tmp_path / "data")
    cfg = small_config(workdir, f"data.dataset_dir={data_dir}")
    before = _keys(cfg, model)
    eval_file = data_dir / "demo_alpaca_eval.json"
    rows = json.loads(eval_file.read_text())
    rows[0]["output"] += " (edited)"
    eval_file.write_text(json.dumps(rows))
    after_eval = _keys(cfg, model)
    assert _moved(before, after_eval) == {"fetch_dataset", "preprocess", "evaluate"}
    train_file = data_dir / "demo_alpaca.json"
    rows = json.loads(train_file.read_text())
    rows[0]["output"] += " (edited)"
    train_file.write_text(json.dumps(rows))
    assert _moved(after_eval, _keys(cfg, model)) == {"fetch_dataset", "preprocess", "train"}


def test_naming_the_model_s_own_template_changes_nothing(workdir, model, base) -> None:
    assert model.metadata["template"], "the built-in declares its template"
    explicit = _keys(small_config(workdir, f"data.template={model.metadata['template']}"), model)
    assert _moved(base, explicit) == set()


def test_template_definition_not_name_keys_preprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workdir, model, base
) -> None:
    cfg = small_config(workdir)
    name = steps.preprocess(cfg, model, steps.fetch_dataset(cfg)).metadata["template"]
    raw = yaml.safe_load(template_module.TEMPLATES_FILE.read_text())
    other = next(n for n in raw if n != name)

    def with_templates(edited: dict) -> dict[str, str]:
        folder = tmp_path / f"templates-{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "templates.yaml").write_text(yaml.safe_dump(edited))
        monkeypatch.setattr(template_module, "TEMPLATES_DIR", folder)
        template_module._load_all.cache_clear()
        return _keys(cfg, model)

    try:
        unrelated = json.loads(json.dumps(raw))
        unrelated[other]["format_user"] += " "
        assert _moved(base, with_templates(unrelated)) == set(), "another template's edit changes nothing"
        edited = json.loads(json.dumps(raw))
        edited[name]["format_user"] += " "
        assert _moved(base, with_templates(edited)) == {"preprocess", "train", "evaluate"}
    finally:
        monkeypatch.undo()
        template_module._load_all.cache_clear()


def test_a_step_version_moves_its_key_and_what_follows(monkeypatch: pytest.MonkeyPatch, workdir, model, base):
    for step, moved in (
        ("preprocess", {"preprocess", "train", "evaluate"}),
        ("train", {"train"}),
        ("evaluate", {"evaluate"}),
        ("fetch_dataset", set(STEPS)),
    ):
        monkeypatch.setitem(step_versions.STEP_VERSIONS, step, step_versions.STEP_VERSIONS[step] + 1)
        assert _moved(base, _keys(small_config(workdir), model)) == moved, step
        monkeypatch.undo()
    assert _moved(base, _keys(small_config(workdir), model)) == set()


# --- the guard: a step's code changes only together with its version ---


def test_step_versions_match_their_sources() -> None:
    recorded = json.loads(step_versions.RECORD.read_text())
    problems = step_versions.stale_steps(recorded)
    assert not problems, "\n".join(problems)


def test_source_change_without_version_bump_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    shutil.copytree(REPO / "ftcore", tmp_path / "ftcore", ignore=shutil.ignore_patterns("__pycache__"))
    recorded = step_versions.current_record(tmp_path)
    assert step_versions.stale_steps(recorded, tmp_path) == []

    processor = tmp_path / "ftcore" / "data" / "processor.py"
    processor.write_text(processor.read_text() + "\n# a change to label masking\n")
    problems = step_versions.stale_steps(recorded, tmp_path)
    assert len(problems) == 1, problems
    assert problems[0].startswith("preprocess changed (ftcore/data/processor.py)")
    assert "bump STEP_VERSIONS['preprocess']" in problems[0]
    assert "python -m ftcore.step_versions --record" in problems[0]

    (tmp_path / "ftcore" / "train" / "new_method.py").write_text("X = 1\n")
    assert [p.split()[0] for p in step_versions.stale_steps(recorded, tmp_path)] == ["preprocess", "train"]

    monkeypatch.setitem(
        step_versions.STEP_VERSIONS, "preprocess", step_versions.STEP_VERSIONS["preprocess"] + 1
    )
    bumped = step_versions.stale_steps(recorded, tmp_path)
    assert "not recorded" in bumped[0] and "bump" not in bumped[0]
    assert step_versions.stale_steps(step_versions.current_record(tmp_path), tmp_path) == []


def test_a_config_dumped_and_loaded_again_keys_the_same() -> None:
    """`ft export` of a config a deployment or `ft config show` wrote must reuse the same steps: an int
    default of a float field (export_size 5 vs 5.0) once keyed the merge differently."""
    import json

    from ftcore.config import PipelineConfig, load_config

    for cfg in (PipelineConfig(), load_config(REPO / "configs" / "quickstart.yaml")):
        again = load_config(json.loads(cfg.model_dump_json()))
        assert json.dumps(cfg.model_dump(mode="json")) == json.dumps(again.model_dump(mode="json"))
