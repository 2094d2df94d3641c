"""Rows parsed once into Arrow by fetch_dataset, tokenized with datasets.map: same rows, same ids."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from ftcore import steps
from ftcore.builtin import ftflow_home
from ftcore.config.llamafactory import flat_to_nested
from ftcore.config.sections import DataConfig
from ftcore.data import build_splits, get_template, load_rows, loader, preprocess_sft
from ftcore.data.processor import ProcessContext, tokenize_split
from ftcore.data.splits import row_features, save_split, write_splits
from ftcore.errors import DataError
from tests.helpers import small_config, write_dataset


@pytest.fixture(scope="module")
def qwen_tok(tiny_qwen2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen2)


@pytest.mark.parametrize(
    "cfg",
    [
        DataConfig(dataset=["demo_alpaca", "identity"], val_size=0.1, seed=7),
        DataConfig(
            dataset=["demo_alpaca", "demo_sharegpt"], eval_dataset=["demo_alpaca_eval"], max_samples=50
        ),
        DataConfig(dataset=["identity"]),
    ],
)
def test_arrow_splits_hold_the_same_rows(tmp_path: Path, data_dir: Path, cfg: DataConfig):
    counts = write_splits(cfg, data_dir, tmp_path)
    expected = build_splits(cfg, data_dir)
    for split in ("train", "eval"):
        assert datasets.load_from_disk(str(tmp_path / split)).to_list() == expected[split]
        assert counts[split] == len(expected[split])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "train"], "no staging files left"


def test_max_samples_stops_reading_across_files(tmp_path: Path):
    (tmp_path / "d").mkdir()
    for i in range(3):
        rows = [{"instruction": f"{i}-{j}", "output": "x"} for j in range(4)]
        (tmp_path / "d" / f"{i}.json").write_text(json.dumps(rows))
    (tmp_path / "d" / "3.json").write_text("not json at all")  # never read: the limit is reached first
    write_dataset(tmp_path, {"d": {"file_name": "d"}}, {})
    assert [r["messages"][0]["content"] for r in load_rows(tmp_path, "d", max_samples=6)] == [
        "0-0",
        "0-1",
        "0-2",
        "0-3",
        "1-0",
        "1-1",
    ]


@pytest.mark.parametrize("num_proc", [None, 2])
def test_tokenize_split_equals_the_processor(qwen_tok, data_dir: Path, num_proc):
    rows = build_splits(DataConfig(dataset=["demo_alpaca", "demo_sharegpt"], max_samples=40), data_dir)[
        "train"
    ]
    template = get_template("qwen")
    context = ProcessContext(qwen_tok, template, 48)
    expected = preprocess_sft(rows, context)
    arrow = datasets.Dataset.from_list(rows, features=row_features())
    got = tokenize_split(arrow, "sft", context, num_proc=num_proc)
    assert got.to_dict() == expected


def test_empty_splits_stay_loadable_datasets(tmp_path: Path, qwen_tok):
    empty = datasets.Dataset.from_dict({name: [] for name in row_features()}, features=row_features())
    tokenized = tokenize_split(empty, "sft", ProcessContext(qwen_tok, get_template("qwen"), 48))
    save_split(tokenized, tmp_path / "eval")
    loaded = datasets.load_from_disk(str(tmp_path / "eval"))
    assert len(loaded) == 0 and loaded.column_names == ["input_ids", "attention_mask", "labels"]


def test_bad_row_fails_preflight_naming_it_and_leaves_nothing(tmp_path: Path):

    rows = [{"instruction": f"{tmp_path.name} {i}", "output": "b"} for i in range(5)] + [{"instruction": "a"}]
    write_dataset(tmp_path, {"d": {"file_name": "d.json"}}, {"d.json": rows})
    cfg = small_config(
        tmp_path / "job", f"data.dataset_dir={tmp_path}", "data.dataset=d", "data.eval_dataset=[]"
    )
    cached = set((ftflow_home() / "datasets").glob("*"))
    with pytest.raises(DataError, match=r"d\.json: row 5: missing required column 'output'"):
        steps.preflight(cfg)
    assert not (tmp_path / "job").exists()
    assert set((ftflow_home() / "datasets").glob("*")) == cached, "no half dataset left in the cache"


def test_rows_are_parsed_once_per_fresh_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):

    rows = [{"instruction": f"{tmp_path.name} {i}", "output": f"answer {i}"} for i in range(40)]
    write_dataset(tmp_path, {"d": {"file_name": "d.json"}}, {"d.json": rows})
    reads: list[str] = []
    read_records = loader._read_records

    def counting(path):
        reads.append(Path(path).name)
        yield from read_records(path)

    monkeypatch.setattr(loader, "_read_records", counting)
    cfg = small_config(
        tmp_path / "job",
        f"data.dataset_dir={tmp_path}",
        "data.dataset=d",
        "data.eval_dataset=[]",
        "data.val_size=0.25",
    )
    steps.preflight(cfg)
    model = steps.fetch_model(cfg)
    dataset = steps.fetch_dataset(cfg)
    tokenized = steps.preprocess(cfg, model, dataset)
    assert reads == ["d.json"]
    assert tokenized.metadata["train_examples"] == 30 and tokenized.metadata["eval_examples"] == 10
    eval_rows = (Path(tokenized.path) / "eval_rows.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in eval_rows] == build_splits(cfg.data, tmp_path)["eval"]


def test_llamafactory_preprocessing_num_workers_is_used():
    nested = flat_to_nested({"dataset": "d", "preprocessing_num_workers": 4})
    assert nested["data"]["preprocessing_num_workers"] == 4
    assert DataConfig(**nested["data"]).preprocessing_num_workers == 4


def test_cutoff_that_drops_every_training_row_is_an_error(tmp_path: Path):

    rows = [{"instruction": f"{tmp_path.name} " + "word " * 300, "output": "ok ok ok ok"}] * 3
    write_dataset(tmp_path, {"d": {"file_name": "d.json"}}, {"d.json": rows})
    cfg = small_config(
        tmp_path / "job",
        f"data.dataset_dir={tmp_path}",
        "data.dataset=d",
        "data.eval_dataset=[]",
        "data.cutoff_len=9",
    )
    model = steps.fetch_model(cfg)
    with pytest.raises(
        DataError, match=r"data.cutoff_len=9: none of the 3 training rows keeps a response token"
    ):
        steps.preprocess(cfg, model, steps.fetch_dataset(cfg))
