"""`ft data check`: per-dataset counts, drop reasons, token percentiles and the histogram, in-process
on the built-in tiny Qwen2 and small files made in the test's tmp dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flows.cli import main
from ftcore.config import load_config
from ftcore.datacheck import check_data, percentiles
from tests.helpers import write_dataset


def _config(tmp_path: Path, **data: object) -> Path:
    rows = [{"instruction": "hi", "output": "short"}, {"instruction": "tell", "output": "word " * 80}]
    lines = [json.dumps(r) for r in rows] + ["{not json", json.dumps({"output": "no prompt"})]
    write_dataset(
        tmp_path,
        {"good": {"file_name": "good.jsonl"}, "bad": {"file_name": "bad.jsonl"}},
        {"good.jsonl": "\n".join(lines) + "\n", "bad.jsonl": "{x\n"},
    )
    cfg = {
        "name": "check",
        "workdir": str(tmp_path / "run"),
        "model": {"name_or_path": "builtin:tiny-qwen2"},
        "data": {"dataset": ["good"], "dataset_dir": str(tmp_path), "cutoff_len": 32, **data},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_percentiles_nearest_rank() -> None:
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p95": 95, "max": 100}
    assert percentiles([]) == {"p50": 0, "p95": 0, "max": 0}


def test_data_check_counts_truncation_and_skipped_rows(tmp_path: Path, tiny_qwen2: Path) -> None:
    cfg = load_config(_config(tmp_path, on_error="skip"))
    image = tmp_path / "lengths.png"
    (check,) = check_data(cfg, image)
    info = check.as_dict()
    assert (info["rows"], info["kept"], info["truncated"], info["dropped"]) == (4, 2, 1, 2)
    assert info["dropped_by_reason"] == {
        "bad row: invalid JSON at line N: Expecting property name enclosed in double quotes": 1,
        "bad row: missing required column 'instruction' (found: output)": 1,
    }
    assert info["response_tokens"]["max"] > 32 > info["response_tokens"]["p50"]
    assert info["template"] == "qwen2"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ft_data_check_cli_errors_on_bad_row_and_explains_empty_dataset(
    tmp_path: Path, tiny_qwen2: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path)
    assert main(["data", "check", str(path)]) == 2  # on_error: error -> the first bad row, named (exit 2)
    assert "good.jsonl: invalid JSON at line 3" in capsys.readouterr().err
    image = tmp_path / "h.png"
    assert main(["data", "check", str(path), "data.on_error=skip", "--image", str(image)]) == 0
    out = capsys.readouterr().out
    assert "dataset 'good' (train): rows 4, kept 2, truncated 1, dropped 2" in out
    assert "dropped 1 x bad row: missing required column 'instruction' (found: output)" in out
    assert "good.jsonl: line 4" in out and "under template qwen2" in out and image.is_file()
    # every row bad: the error says why instead of an empty dataset
    assert main(["data", "check", str(path), "data.dataset=bad", "data.on_error=skip"]) == 2
    assert "all 1 rows were skipped as bad" in capsys.readouterr().err


def test_fetch_dataset_honours_on_error_and_counts_skipped_rows(tmp_path: Path) -> None:
    from ftcore import steps
    from ftcore.errors import DataError

    path = _config(tmp_path)
    with pytest.raises(DataError, match=r"good\.jsonl: invalid JSON at line 3"):
        steps.fetch_dataset(load_config(path))
    fetched = steps.fetch_dataset(load_config(path, ["data.on_error=skip"]))
    assert fetched.metadata["train_rows"] == 2 and fetched.metadata["skipped_rows"] == 2
    assert fetched.metadata["rows"]["good"]["skipped_by_reason"] == {
        "invalid JSON at line N: Expecting property name enclosed in double quotes": 1,
        "missing required column 'instruction' (found: output)": 1,
    }
