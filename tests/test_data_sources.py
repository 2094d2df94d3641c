"""Dataset sources and file types (file, folder, hub cache), mixing several datasets, num_samples and
data.on_error: skip. All in-process on small files made in the test's tmp dir."""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import pytest

from ftcore.config.sections import DataConfig
from ftcore.data import build_splits, load_rows
from ftcore.data.loader import RowStats, iter_rows
from ftcore.data.splits import split_fingerprints, write_splits
from ftcore.errors import ConfigError, DataError
from tests.helpers import write_dataset

RECORDS = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(6)]
CLOSED_ENDPOINT = "http://127.0.0.1:9"  # nothing listens: a connect is refused at once


def _write_as(path: Path, records: list[dict]) -> None:
    """The same records in the file type of `path`'s suffix."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = path.suffix
    if kind == ".json":
        path.write_text(json.dumps(records))
    elif kind == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif kind == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    elif kind == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), str(path))
    elif kind == ".arrow":  # the IPC stream format datasets itself writes
        table = pa.Table.from_pylist(records)
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv", ".parquet", ".arrow"])
def test_every_file_type_gives_the_same_rows(tmp_path: Path, suffix: str) -> None:
    _write_as(tmp_path / f"d{suffix}", RECORDS)
    write_dataset(tmp_path, {"d": {"file_name": f"d{suffix}"}}, {})
    rows = load_rows(tmp_path, "d")
    assert [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows] == [
        (f"q{i}", f"a{i}") for i in range(6)
    ]


def test_txt_is_one_text_per_line_for_pt(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"t": {"file_name": "t.txt"}}, {"t.txt": "first doc\n\nsecond doc\n"})
    rows = load_rows(tmp_path, "t", kind="pt")
    assert [r["messages"][0]["content"] for r in rows] == ["first doc", "second doc"]


def test_folder_reads_all_files_of_one_type_and_refuses_mixed(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    _write_as(tmp_path / "parts" / "a.parquet", RECORDS[:2])
    _write_as(tmp_path / "parts" / "b.parquet", RECORDS[2:5])
    write_dataset(tmp_path, {"f": {"file_name": "parts"}}, {})
    assert [r["messages"][0]["content"] for r in load_rows(tmp_path, "f")] == [f"q{i}" for i in range(5)]
    _write_as(tmp_path / "parts" / "c.jsonl", RECORDS[:1])
    with pytest.raises(DataError, match=r"one type, found json, parquet"):
        load_rows(tmp_path, "f")


def test_bad_rows_name_file_and_line_in_csv_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("instruction,output\nhi,there\n,missing prompt\n")
    _write_as(
        tmp_path / "p.parquet", [{"instruction": "x", "output": "y"}, {"instruction": "x", "output": None}]
    )
    write_dataset(tmp_path, {"c": {"file_name": "d.csv"}, "p": {"file_name": "p.parquet"}}, {})
    with pytest.raises(DataError, match=r"d\.csv: line 3: missing required column 'instruction'"):
        load_rows(tmp_path, "c")
    with pytest.raises(DataError, match=r"p\.parquet: row 1: missing required column 'output'"):
        load_rows(tmp_path, "p")


def test_openai_formatting_and_ignored_media_columns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    info = {
        "o": {
            "file_name": "o.json",
            "formatting": "openai",
            "columns": {"messages": "messages", "images": "images"},
        }
    }
    write_dataset(tmp_path, info, {"o.json": [{"messages": msgs, "images": ["x.png"]}] * 2})
    with caplog.at_level(logging.INFO, logger="ftcore.data.loader"):
        rows = load_rows(tmp_path, "o")
        load_rows(tmp_path, "o")
    assert rows[0]["system"] == "S" and rows[0]["messages"][-1] == {"role": "assistant", "content": "a"}
    notes = [r.message for r in caplog.records if "ignored" in r.message]
    assert len(notes) == 1 and "images" in notes[0]  # once per dataset, not per row or read


# --- hub datasets from the local cache (the remote hub cannot exist here: the caches are laid out
# --- as `hf download --repo-type dataset` / `modelscope download --dataset` leave them) ---


def _hf_dataset_cache(
    cache: Path, repo: str, files: dict[str, list[dict]], sha: str = "c0ffee" * 6 + "abcd"
) -> Path:
    storage = cache / ("datasets--" + repo.replace("/", "--"))
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(sha)
    snapshot = storage / "snapshots" / sha
    for name, records in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        _write_as(snapshot / name, records)
    return snapshot


@pytest.fixture
def hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hf_hub_dataset_loads_offline_with_subset_split_and_folder(hf_cache: Path, tmp_path: Path) -> None:
    _hf_dataset_cache(
        hf_cache,
        "org/chat",
        {
            "data/train-00000-of-00001.parquet": RECORDS[:4],
            "data/test-00000-of-00001.parquet": RECORDS[4:],
            "extra/train.jsonl": RECORDS[:1],
            "zh/train.jsonl": RECORDS[1:3],
        },
    )
    info = {
        "train": {"hf_hub_url": "org/chat", "folder": "data"},
        "test": {"hf_hub_url": "org/chat", "folder": "data", "split": "test"},
        "zh": {"hf_hub_url": "org/chat", "subset": "zh"},
        "none": {"hf_hub_url": "org/chat", "folder": "data", "split": "validation"},
    }
    write_dataset(tmp_path, info, {})
    assert [r["messages"][0]["content"] for r in load_rows(tmp_path, "train")] == ["q0", "q1", "q2", "q3"]
    assert [r["messages"][0]["content"] for r in load_rows(tmp_path, "test")] == ["q4", "q5"]
    assert [r["messages"][0]["content"] for r in load_rows(tmp_path, "zh")] == ["q1", "q2"]
    with pytest.raises(DataError, match=r"no data files of split 'validation'.*splits found: test, train"):
        load_rows(tmp_path, "none")
    # a hub dataset is fingerprinted by its snapshot revision, not by hashing its files
    fps = split_fingerprints(DataConfig(dataset=["train"]), tmp_path)
    assert fps == split_fingerprints(DataConfig(dataset=["train"]), tmp_path)


def test_hub_dataset_not_cached_fails_fast_naming_dataset_and_key(
    hf_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub  # noqa: F401  (import time is not what is measured)

    write_dataset(tmp_path, {"gone": {"hf_hub_url": "org/absent"}}, {})
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_rows(tmp_path, "gone")
    assert time.perf_counter() - start < 2
    message = str(info.value)
    assert "dataset 'gone'" in message and "hf_hub_url: org/absent" in message and "HF_HUB_OFFLINE" in message
    assert "hf download org/absent --repo-type dataset" in message
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_ENDPOINT)
    with pytest.raises(DataError, match=r"not cached and http://127\.0\.0\.1:9 is unreachable"):
        load_rows(tmp_path, "gone")


def test_ms_hub_dataset_loads_from_modelscope_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("modelscope")
    cache = tmp_path / "ms-cache"
    monkeypatch.setenv("MODELSCOPE_CACHE", str(cache))
    monkeypatch.setenv("MODELSCOPE_OFFLINE", "1")
    storage = cache / "datasets" / "org--ds"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "master").write_text("v1")
    (storage / "snapshots" / "v1").mkdir(parents=True)
    _write_as(storage / "snapshots" / "v1" / "train.jsonl", RECORDS[:3])
    # both urls: ms_hub_url wins under USE_MODELSCOPE_HUB (LLaMA-Factory's rule), else hf_hub_url
    info = {
        "d": {"ms_hub_url": "org/ds", "hf_hub_url": "org/elsewhere"},
        "m": {"ms_hub_url": "org/ms-absent"},
    }
    write_dataset(tmp_path, info, {})
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    assert [r["messages"][0]["content"] for r in load_rows(tmp_path, "d")] == ["q0", "q1", "q2"]
    with pytest.raises(DataError, match=r"dataset 'm' \(ms_hub_url: org/ms-absent.*MODELSCOPE_OFFLINE"):
        load_rows(tmp_path, "m")


# --- several datasets, num_samples, on_error ---


def _two(tmp_path: Path, a: int = 6, b: int = 2) -> Path:
    def rec(tag: str, n: int) -> list[dict]:
        return [{"instruction": f"{tag}{i}", "output": "x"} for i in range(n)]

    return write_dataset(
        tmp_path,
        {
            "a": {"file_name": "a.json"},
            "b": {"file_name": "b.json"},
            "n": {"file_name": "a.json", "num_samples": 9},
        },
        {"a.json": rec("a", a), "b.json": rec("b", b)},
    )


def _prompts(cfg: DataConfig, data_dir: Path) -> list[str]:
    return [r["messages"][0]["content"] for r in build_splits(cfg, data_dir)["train"]]


def test_mix_strategies_follow_llamafactory(tmp_path: Path) -> None:
    data_dir = _two(tmp_path)
    assert _prompts(DataConfig(dataset=["a", "b"]), data_dir) == [f"a{i}" for i in range(6)] + ["b0", "b1"]
    # interleave without probabilities: turns, stopping when the first / the last runs out
    under = _prompts(DataConfig(dataset=["a", "b"], mix_strategy="interleave_under"), data_dir)
    assert under == ["a0", "b0", "a1", "b1"]
    over = _prompts(DataConfig(dataset=["a", "b"], mix_strategy="interleave_over"), data_dir)
    assert over[:4] == ["a0", "b0", "a1", "b1"] and over.count("b0") == 3 and len(over) == 12
    cfg = DataConfig(dataset=["a", "b"], mix_strategy="interleave_under", interleave_probs="0.8,0.2")
    first = _prompts(cfg, data_dir)
    assert first == _prompts(cfg, data_dir)  # seeded
    assert first != _prompts(cfg.model_copy(update={"seed": 7}), data_dir)
    assert split_fingerprints(cfg, data_dir) != split_fingerprints(
        cfg.model_copy(update={"interleave_probs": [0.5, 0.5]}), data_dir
    )
    with pytest.raises(ValueError, match="interleave_probs has 1 values for 2 datasets"):
        DataConfig(dataset=["a", "b"], mix_strategy="interleave_over", interleave_probs=[1.0])


def test_num_samples_draws_then_max_samples_cuts(tmp_path: Path) -> None:
    data_dir = _two(tmp_path)
    drawn = _prompts(DataConfig(dataset=["n"]), data_dir)
    assert len(drawn) == 9 and set(drawn) == {f"a{i}" for i in range(6)}  # all 6, then 3 repeats
    assert _prompts(DataConfig(dataset=["n"], max_samples=4), data_dir) == drawn[:4]
    assert _prompts(DataConfig(dataset=["n"], seed=1), data_dir) != drawn


def test_on_error_skip_counts_bad_rows_by_reason(tmp_path: Path) -> None:
    lines = [
        json.dumps({"instruction": "q", "output": "a"}),
        "{broken",
        json.dumps({"instruction": 3, "output": "a"}),
        json.dumps({"instruction": "q2", "output": "a"}),
        json.dumps({"output": "a"}),
        json.dumps({"output": "b"}),
    ]
    write_dataset(tmp_path, {"d": {"file_name": "d.jsonl"}}, {"d.jsonl": "\n".join(lines) + "\n"})
    with pytest.raises(DataError, match=r"d\.jsonl: invalid JSON at line 2"):
        load_rows(tmp_path, "d")
    stats = RowStats()
    rows = [r for _, r in iter_rows(tmp_path, "d", on_error="skip", stats=stats)]
    assert [r["messages"][0]["content"] for r in rows] == ["q", "q2"]
    assert stats.read == 6 and stats.kept == 2
    assert dict(stats.skipped) == {
        "invalid JSON at line N: Expecting property name enclosed in double quotes": 1,
        "column 'instruction' must be a string, got int": 1,
        "missing required column 'instruction' (found: output)": 2,
    }
    assert stats.first["missing required column 'instruction' (found: output)"].endswith("d.jsonl: line 5")
    report: dict[str, RowStats] = {}
    counts = write_splits(
        DataConfig(dataset=["d"], on_error="skip"), tmp_path, tmp_path / "out", report=report
    )
    assert counts["train"] == 2 and report["d"].as_dict()["skipped"] == 4
    # every row bad: an error that says why, never an empty dataset
    write_dataset(tmp_path, {"bad": {"file_name": "bad.jsonl"}}, {"bad.jsonl": "{x\n{y\n"})
    with pytest.raises(DataError, match=r"all 2 rows were skipped as bad.*2 x invalid JSON"):
        load_rows_skip = list(iter_rows(tmp_path, "bad", on_error="skip"))
        del load_rows_skip
    with pytest.raises(ConfigError, match="on_error"):
        list(iter_rows(tmp_path, "d", on_error="ignore"))
