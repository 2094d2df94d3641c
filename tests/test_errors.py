"""Bad input fails before any heavy work, with a message that names what is wrong and where.

Each case goes through `ft run`, which checks the config before Prefect starts; the workdir must
stay empty, since nothing should have been built, trained or registered.
"""

from __future__ import annotations

import json
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
