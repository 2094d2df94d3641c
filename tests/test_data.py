"""Dataset loading and validation, SFT preprocessing, collation and splits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pytest

from ftcore.config.sections import DataConfig
from ftcore.data import (
    IGNORE_INDEX,
    PROCESSORS,
    SFTCollator,
    build_splits,
    get_template,
    infer_seqlen,
    load_dataset_info,
    load_rows,
    preprocess_sft,
)
from ftcore.data.converter import row
from ftcore.data.processor import ProcessContext, tokenize_split
from ftcore.data.splits import row_features, split_fingerprints, write_splits
from ftcore.errors import ConfigError, DataError
from tests.helpers import write_dataset


@pytest.fixture(scope="module")
def qwen_tok(tiny_qwen2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_qwen2)


# --- loading ---------------------------------------------------------------------------------


def test_shipped_datasets(data_dir: Path):
    kinds = {"dpo_en_demo": "pairwise", "kto_en_demo": "kto", "c4_demo": "pt"}
    sizes = {
        name: len(load_rows(data_dir, name, kind=kinds.get(name, "sft")))
        for name in load_dataset_info(data_dir)
    }
    assert sizes == {"demo_alpaca": 300, "demo_alpaca_eval": 60, "identity": 20, "demo_sharegpt": 20} | {
        name: 32
        for name in (
            "alpaca_en_demo",
            "alpaca_zh_demo",
            "glaive_toolcall_en_demo",
            "dpo_en_demo",
            "kto_en_demo",
        )
    } | {"c4_demo": 32}
    row = load_rows(data_dir, "demo_alpaca", max_samples=1)[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"] and row["system"] is None
    convs = load_rows(data_dir, "demo_sharegpt")
    assert all(len(r["messages"]) >= 4 for r in convs) and any(r["system"] for r in convs)
    assert "ftflow-assistant" in load_rows(data_dir, "identity")[0]["messages"][1]["content"]
    key = lambda r: r["messages"][0]["content"]  # noqa: E731
    train = {key(r) for r in load_rows(data_dir, "demo_alpaca")}
    assert not train & {key(r) for r in load_rows(data_dir, "demo_alpaca_eval")}
    for file in data_dir.glob("*.json"):
        assert file.stat().st_size < 100_000


def test_alpaca_columns_history_and_jsonl(tmp_path: Path):
    rows = [
        {"q": "Say hi", "ctx": "", "a": "hi", "sys": "Be brief.", "hist": [["one", "1"]]},
        {"q": "Add", "ctx": "1 + 2", "a": "3"},
    ]
    columns = {"prompt": "q", "query": "ctx", "response": "a", "system": "sys", "history": "hist"}
    write_dataset(
        tmp_path,
        {"d": {"file_name": "d.jsonl", "columns": columns}},
        {"d.jsonl": "\n".join(json.dumps(r) for r in rows) + "\n\n"},
    )
    first, second = load_rows(tmp_path, "d")
    assert first["system"] == "Be brief."
    assert [m["content"] for m in first["messages"]] == ["one", "1", "Say hi", "hi"]
    assert second["messages"][0]["content"] == "Add\n1 + 2" and second["system"] is None
    assert len(load_rows(tmp_path, "d", max_samples=1)) == 1


def test_sharegpt_tags_and_openai_messages(tmp_path: Path):
    custom = [{"chat": [{"who": "s", "text": "sys"}, {"who": "u", "text": "q"}, {"who": "b", "text": "a"}]}]
    openai = [
        {
            "messages": [
                {"role": "system", "content": "S"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
            ]
        }
    ]
    tags = {
        "role_tag": "who",
        "content_tag": "text",
        "user_tag": "u",
        "assistant_tag": "b",
        "system_tag": "s",
    }
    info = {
        "custom": {
            "file_name": "c.json",
            "formatting": "sharegpt",
            "columns": {"messages": "chat"},
            "tags": tags,
        },
        "openai": {"file_name": "o.json", "formatting": "sharegpt"},
    }
    write_dataset(tmp_path, info, {"c.json": custom, "o.json": openai})
    expected = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert load_rows(tmp_path, "custom") == [row(expected, "sys")]
    assert load_rows(tmp_path, "openai") == [row(expected, "S")]


# --- errors name the file and row ------------------------------------------------------------


def test_missing_dataset_info(tmp_path: Path):
    with pytest.raises(ConfigError, match=f"dataset_info.json.*{tmp_path}"):
        load_rows(tmp_path, "x")


def test_unknown_dataset_names_file(data_dir: Path):
    with pytest.raises(ConfigError, match=r"'nope' is not in .*dataset_info.json.*demo_alpaca"):
        load_rows(data_dir, "nope")


def test_missing_data_file(tmp_path: Path):
    write_dataset(tmp_path, {"d": {"file_name": "gone.json"}}, {})
    with pytest.raises(DataError, match=r"dataset 'd'.*gone.json"):
        load_rows(tmp_path, "d")


def test_malformed_json_line(tmp_path: Path):
    write_dataset(
        tmp_path,
        {"a": {"file_name": "a.json"}, "b": {"file_name": "b.jsonl"}},
        {
            "a.json": '[\n {"instruction": "x",\n  "output": }\n]',
            "b.jsonl": '{"instruction": "x", "output": "y"}\n{oops\n',
        },
    )
    with pytest.raises(DataError, match=r"a\.json: invalid JSON at line 3"):
        load_rows(tmp_path, "a")
    with pytest.raises(DataError, match=r"b\.jsonl: invalid JSON at line 2"):
        load_rows(tmp_path, "b")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"instruction": "x"}, "missing required column 'output'"),
        ({"instruction": "x", "output": 3}, "column 'output' must be a string"),
        ({"instruction": "x", "output": "y", "history": ["bad"]}, "history"),
        ("just text", "expected an object"),
    ],
)
def test_bad_alpaca_row_names_file_and_row(tmp_path: Path, row, message):
    good = {"instruction": "a", "output": "b"}
    write_dataset(
        tmp_path,
        {"d": {"file_name": "d.json"}, "l": {"file_name": "d.jsonl"}},
        {"d.json": [good, good, row], "d.jsonl": f"{json.dumps(good)}\n{json.dumps(row)}\n"},
    )
    with pytest.raises(DataError, match=rf"d\.json: row 2: .*{message}"):
        load_rows(tmp_path, "d")
    with pytest.raises(DataError, match=rf"d\.jsonl: line 2: .*{message}"):
        load_rows(tmp_path, "l")


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        ([("gpt", "a"), ("human", "q")], "message 0 has from='gpt', expected 'human'"),
        ([("human", "q"), ("human", "q2")], "message 1 has from='human', expected 'gpt'"),
        ([("human", "q"), ("gpt", "a"), ("human", "q2")], "must end with an assistant turn"),
        ([], "must end with an assistant turn"),
    ],
)
def test_bad_role_order_names_file_and_row(tmp_path: Path, turns, message):
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    bad = {"conversations": [{"from": f, "value": v} for f, v in turns]}
    write_dataset(tmp_path, {"d": {"file_name": "d.json", "formatting": "sharegpt"}}, {"d.json": [good, bad]})
    with pytest.raises(DataError, match=rf"d\.json: row 1: .*{message}"):
        load_rows(tmp_path, "d")


# --- preprocessing ---------------------------------------------------------------------------


ROW = row(
    [
        {"role": "user", "content": "Add the two numbers.\n12 + 7"},
        {"role": "assistant", "content": "19"},
        {"role": "user", "content": "Convert to uppercase.\nred apple"},
        {"role": "assistant", "content": "RED APPLE"},
    ]
)


def ctx(tokenizer, cutoff_len: int = 1024, template: str = "qwen", **data) -> ProcessContext:
    return ProcessContext(tokenizer, get_template(template), cutoff_len, DataConfig(**data))


def test_labels_mask_exactly_the_prompts(qwen_tok):
    template = get_template("qwen")
    pairs = template.encode_multiturn(qwen_tok, ROW["messages"])
    out = PROCESSORS["sft"]([ROW], ctx(qwen_tok))
    expected_ids, expected_labels = [], []
    for prompt, response in pairs:
        expected_ids += prompt + response
        expected_labels += [IGNORE_INDEX] * len(prompt) + response
    assert out["input_ids"] == [expected_ids] and out["labels"] == [expected_labels]
    assert out["attention_mask"] == [[1] * len(expected_ids)]
    kept = preprocess_sft([ROW], ctx(qwen_tok, train_on_prompt=True))
    assert kept["labels"] == [expected_ids]


def test_infer_seqlen_matches_llamafactory():
    assert infer_seqlen(100, 10, 50) == (40, 10)  # short response kept whole
    assert infer_seqlen(10, 100, 50) == (10, 40)  # short prompt kept whole
    assert infer_seqlen(60, 40, 50) == (30, 20)  # both shrink in proportion


@pytest.mark.parametrize("cutoff_len", [9, 20, 30, 45, 1024])
def test_cutoff_len_truncation(qwen_tok, cutoff_len):
    out = preprocess_sft([ROW] * 2, ctx(qwen_tok, cutoff_len))
    for ids, labels in zip(out["input_ids"], out["labels"], strict=True):
        assert len(ids) == len(labels) <= cutoff_len
        assert any(label != IGNORE_INDEX for label in labels)


def test_rows_without_response_tokens_dropped(qwen_tok, caplog):
    # A long response next to a far longer prompt gets a zero share of a tiny budget (infer_seqlen).
    turns = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok " * 4}]
    long_prompt = row(turns)
    out = preprocess_sft([long_prompt, ROW], ctx(qwen_tok, 12))
    assert len(out["input_ids"]) == 1
    rows = datasets.Dataset.from_list([long_prompt, ROW], features=row_features())
    with caplog.at_level(logging.WARNING):
        tokenized = tokenize_split(rows, "sft", ctx(qwen_tok, 12))
    assert tokenized.to_dict() == out
    assert "dropped 1 of 2 rows" in caplog.text


def test_collator_right_pads():
    features = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
    ]
    batch = SFTCollator(pad_token_id=0)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert SFTCollator(pad_token_id=0, pad_to_multiple_of=4)(features)["input_ids"].shape == (2, 4)


# --- splits ----------------------------------------------------------------------------------


def _keys(rows):
    return [json.dumps(r, sort_keys=True) for r in rows]


def test_val_size_split_disjoint_and_deterministic(data_dir: Path):
    cfg = DataConfig(dataset=["demo_alpaca", "identity"], val_size=0.1, seed=7)
    first, again = build_splits(cfg, data_dir), build_splits(cfg, data_dir)
    assert first == again
    assert len(first["train"]) == 288 and len(first["eval"]) == 32
    assert sorted(_keys(first["train"]) + _keys(first["eval"])) == sorted(
        _keys(load_rows(data_dir, "demo_alpaca") + load_rows(data_dir, "identity"))
    )
    other = build_splits(cfg.model_copy(update={"seed": 8}), data_dir)
    assert other["eval"] != first["eval"]


def test_eval_dataset_and_no_eval(data_dir: Path):
    split = build_splits(DataConfig(dataset=["demo_alpaca"], eval_dataset=["demo_alpaca_eval"]), data_dir)
    assert len(split["eval"]) == 60 and not set(_keys(split["train"])) & set(_keys(split["eval"]))
    assert build_splits(DataConfig(dataset=["identity"], max_samples=5), data_dir) == {
        "train": load_rows(data_dir, "identity", 5),
        "eval": [],
    }


def test_split_fingerprints_track_content_and_selection_per_split(tmp_path: Path):
    write_dataset(
        tmp_path,
        {"d": {"file_name": "d.json"}, "e": {"file_name": "e.json"}},
        {"d.json": [{"instruction": "a", "output": "b"}], "e.json": [{"instruction": "x", "output": "y"}]},
    )
    cfg = DataConfig(dataset=["d"], eval_dataset=["e"])
    before = split_fingerprints(cfg, tmp_path)
    assert split_fingerprints(cfg, tmp_path) == before
    assert split_fingerprints(cfg.model_copy(update={"max_samples": 1}), tmp_path) != before
    swapped = split_fingerprints(DataConfig(dataset=["e", "d"], eval_dataset=["e"]), tmp_path)
    assert (
        swapped["train"]
        != split_fingerprints(DataConfig(dataset=["d", "e"], eval_dataset=["e"]), tmp_path)["train"]
    )
    assert split_fingerprints(DataConfig(dataset=["d", "d"]), tmp_path)["train"] != before["train"]
    (tmp_path / "e.json").write_text(json.dumps([{"instruction": "x", "output": "z"}]))
    after_eval = split_fingerprints(cfg, tmp_path)
    assert after_eval["train"] == before["train"] and after_eval["eval"] != before["eval"]
    (tmp_path / "d.json").write_text(json.dumps([{"instruction": "a", "output": "c"}]))
    after_train = split_fingerprints(cfg, tmp_path)
    assert after_train["train"] != before["train"] and after_train["eval"] == after_eval["eval"]


# --- bad bytes, empty responses, degenerate splits -------------------------------------------


def test_non_utf8_data_names_file_line_and_byte(tmp_path: Path):
    good = json.dumps({"instruction": "a", "output": "b"}).encode()
    (tmp_path / "d.json").write_bytes(b"[\n" + good + b",\n" + good[:-2] + b'\xe9"}\n]')
    (tmp_path / "d.jsonl").write_bytes(good + b"\n" + good + b"\n" + b'{"instruction": "caf\xe9"}\n')
    write_dataset(tmp_path, {"j": {"file_name": "d.json"}, "l": {"file_name": "d.jsonl"}}, {})
    offset = len(b"[\n" + good + b",\n" + good[:-2])
    with pytest.raises(DataError, match=rf"d\.json: not valid UTF-8 at line 3 \(byte offset {offset}\)"):
        load_rows(tmp_path, "j")
    offset = 2 * (len(good) + 1) + len(b'{"instruction": "caf')
    with pytest.raises(DataError, match=rf"d\.jsonl: not valid UTF-8 at line 3 \(byte offset {offset}\)"):
        load_rows(tmp_path, "l")


def test_utf8_bom_is_accepted(tmp_path: Path):
    rows = [{"instruction": "é", "output": "b"}]
    (tmp_path / "d.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows, ensure_ascii=False).encode())
    (tmp_path / "d.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(rows[0], ensure_ascii=False).encode())
    write_dataset(tmp_path, {"j": {"file_name": "d.json"}, "l": {"file_name": "d.jsonl"}}, {})
    assert load_rows(tmp_path, "j") == load_rows(tmp_path, "l")
    assert load_rows(tmp_path, "j")[0]["messages"][0]["content"] == "é"


def test_all_empty_responses_are_an_error_some_a_warning(tmp_path: Path, caplog):
    rows = [{"instruction": f"q{i}", "output": "" if i else " \n"} for i in range(3)]
    write_dataset(tmp_path, {"d": {"file_name": "d.json"}}, {"d.json": rows})
    with pytest.raises(DataError, match=r"dataset 'd' \(.*d\.json\): all 3 rows have an empty response"):
        load_rows(tmp_path, "d")
    rows[1]["output"] = "fine"
    (tmp_path / "d.json").write_text(json.dumps(rows))
    with caplog.at_level(logging.WARNING):
        assert len(load_rows(tmp_path, "d")) == 3
    assert "dataset 'd': 2 of 3 rows have an empty response (first: " in caplog.text
    assert "d.json: row 0" in caplog.text
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]
    write_dataset(
        tmp_path,
        {"s": {"file_name": "s.json", "formatting": "sharegpt"}},
        {"s.json": [{"conversations": turns}]},
    )
    with pytest.raises(DataError, match=r"dataset 's'.*all 1 rows have an empty response"):
        build_splits(DataConfig(dataset=["s"]), tmp_path)


def test_val_size_holding_out_most_rows_is_an_error(tmp_path: Path, data_dir: Path, caplog):
    with pytest.raises(
        ConfigError, match=r"data.val_size=0.99 holds out 297 of the 300 rows .* leaves 3 to train"
    ):
        build_splits(DataConfig(dataset=["demo_alpaca"], val_size=0.99), data_dir)
    with pytest.raises(ConfigError, match=r"data\.val_size=0\.6"):
        write_splits(DataConfig(dataset=["demo_alpaca"], val_size=0.6), data_dir, tmp_path)
    with caplog.at_level(logging.WARNING):
        split = build_splits(DataConfig(dataset=["identity"], val_size=0.5), data_dir)
    assert len(split["train"]) == 10
    assert "data.val_size=0.5 leaves only 10 of 20 rows for training (10 held out)" in caplog.text
