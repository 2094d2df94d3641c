"""Bad input fails before any heavy work, with a message that names what is wrong and where.

Each case goes through `ft run`, which checks the config before Prefect starts; the workdir must
stay empty, since nothing should have been built, trained or registered.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from flows.cli import main as ft
from tests.helpers import REPO


def _job(tmp_path: Path, data_dir: Path | None = None, **changes: object) -> Path:
    raw = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    raw["workdir"] = str(tmp_path / "work")
    raw["data"]["dataset_dir"] = str(data_dir or REPO / "data")
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _fails(capsys: pytest.CaptureFixture[str], path: Path, *overrides: str) -> str:
    assert ft(["run", str(path), *overrides]) == 2
    return capsys.readouterr().err


def _data_copy(tmp_path: Path) -> Path:
    target = tmp_path / "data"
    target.mkdir()
    for name in ("dataset_info.json", "demo_alpaca.json", "demo_alpaca_eval.json", "identity.json"):
        (target / name).write_bytes((REPO / "data" / name).read_bytes())
    return target


def test_unknown_config_key_is_named_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _job(tmp_path, train__learning_rat=1e-3)
    err = _fails(capsys, path)
    assert "unknown config key 'train.learning_rat'" in err
    assert f"{path}:" in err
    assert not (tmp_path / "work").exists()


def test_missing_dataset_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _data_copy(tmp_path)
    (data / "identity.json").unlink()
    err = _fails(capsys, _job(tmp_path, data))
    assert "identity" in err and "identity.json" in err
    assert not (tmp_path / "work").exists()


def test_unknown_dataset_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, _job(tmp_path, data__dataset=["demo_alpaca", "no_such_set"]))
    assert "no_such_set" in err and "dataset_info.json" in err


def test_malformed_json_row_names_file_and_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _data_copy(tmp_path)
    rows = json.loads((data / "demo_alpaca.json").read_text())
    rows[7] = {"instruction": 42, "output": ["not", "text"]}
    (data / "demo_alpaca.json").write_text(json.dumps(rows))
    err = _fails(capsys, _job(tmp_path, data))
    assert "demo_alpaca.json" in err and "row 7" in err
    assert not (tmp_path / "work").exists()


def test_broken_json_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _data_copy(tmp_path)
    text = (data / "identity.json").read_text().replace('"output"', '"output" "oops"', 1)
    (data / "identity.json").write_text(text)
    err = _fails(capsys, _job(tmp_path, data))
    assert "identity.json" in err and "line" in err


def test_unknown_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, _job(tmp_path, data__template="vicuna-9000"))
    assert "vicuna-9000" in err and "qwen" in err  # names it and lists the known ones
    assert not (tmp_path / "work").exists()


def test_model_not_available_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, _job(tmp_path, model__name_or_path="hf:someorg/not-cached-model"))
    assert "hf:someorg/not-cached-model" in err and "hf download someorg/not-cached-model" in err
    assert not (tmp_path / "work").exists()


def test_bad_value_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _fails(capsys, _job(tmp_path), "train.finetuning_type=lorra")
    assert "train.finetuning_type" in err and "lorra" in err


# --- folders ftflow writes into, and where it reads an adapter ---


@pytest.fixture(scope="module")
def lora_adapter(tiny_qwen2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained) peft LoRA adapter for tiny-qwen2, laid out as `ft train` leaves it:
    <output_dir>/model/adapter_config.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("lf-output") / "sft"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_qwen2), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    )
    model.save_pretrained(out / "model")
    AutoTokenizer.from_pretrained(tiny_qwen2).save_pretrained(out / "model")  # as LLaMA-Factory saves it
    return out


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "notes.md").write_text("my notes")
    (path / "data").mkdir()
    (path / "data" / "rows.json").write_text("[]")
    return path


def _untouched(path: Path) -> bool:
    return sorted(p.name for p in path.rglob("*")) == ["data", "notes.md", "rows.json"]


def test_export_into_a_folder_ftflow_did_not_create_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lora_adapter: Path
) -> None:
    """`ft export CFG export.export_dir=.` once replaced the folder (config, data, notes) and exited 0."""
    mine = _user_folder(tmp_path / "mine")
    args = [f"model.adapter_name_or_path={lora_adapter / 'model'}", f"export.export_dir={mine}"]
    assert ft(["export", str(_job(tmp_path)), *args]) == 2
    err = capsys.readouterr().err
    assert f"export.export_dir: {mine} already holds files that ftflow did not write" in err
    assert _untouched(mine)
    assert ft(["export", str(_job(tmp_path)), *args[:1], f"export.export_dir={mine / 'notes.md'}"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert _untouched(mine)


def test_train_into_a_folder_ftflow_did_not_create_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = _user_folder(tmp_path / "saves")
    assert ft(["train", str(_job(tmp_path)), f"train.output_dir={mine}"]) == 2
    err = capsys.readouterr().err
    assert f"train.output_dir: {mine} already holds files that ftflow did not write" in err
    assert _untouched(mine)
    assert not (tmp_path / "work").exists()


def test_adapter_path_may_be_the_output_dir_as_in_llamafactory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lora_adapter: Path
) -> None:
    """LLaMA-Factory users name the output_dir as adapter; ftflow keeps the adapter in <output_dir>/model."""
    exported = tmp_path / "merged"
    args = [f"model.adapter_name_or_path={lora_adapter}", f"export.export_dir={exported}"]
    assert ft(["export", str(_job(tmp_path)), *args]) == 0, capsys.readouterr().err
    assert (exported / "model.safetensors").is_file()
    # exporting again replaces ftflow's own folder without complaint
    assert ft(["export", str(_job(tmp_path)), *args]) == 0
    err = _fails(capsys, _job(tmp_path), f"model.adapter_name_or_path={tmp_path}")
    assert f"model.adapter_name_or_path: {tmp_path} has no adapter_config.json" in err


def test_unwritable_workdir_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = _fails(capsys, _job(tmp_path), f"workdir={blocker / 'work'}")
    assert f"workdir: cannot create {blocker / 'work'}: {blocker} is a file, not a folder" in err
    err = _fails(capsys, _job(tmp_path), "workdir=/proc/ftflow-work")  # read-only even for root
    assert "workdir: /proc/ftflow-work is not writable" in err


def test_corrupt_model_config_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_qwen2: Path
) -> None:
    model = tmp_path / "my-model"
    shutil.copytree(tiny_qwen2, model)
    (model / "config.json").write_text("{not json")
    err = _fails(capsys, _job(tmp_path, model__name_or_path=str(model)))
    assert f"{model / 'config.json'} is not valid JSON" in err
    assert not (tmp_path / "work").exists()


def test_ft_in_one_process_many_times_logs_once_to_the_current_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`main()` run again with a new stderr (tests, notebooks): no handler left on a closed stream."""
    import io
    import logging
    import sys

    from flows.cli import _ftcore_to_stderr

    for _ in range(3):
        old = io.StringIO()
        monkeypatch.setattr(sys, "stderr", old)
        _ftcore_to_stderr()
        old.close()
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    logging.getLogger("ftcore.test").info("one line")
    assert now.getvalue().count("one line") == 1
