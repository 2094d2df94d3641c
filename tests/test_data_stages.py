"""Data for every stage: each data kind's features on hand-worked tiny examples (block cutting, label
masking, pair masking, KL pairs, mask_history), tool calls rendered like the official templates, bad
rows named by file and row, and LLaMA-Factory's own dataset_info.json entries loading unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from ftcore.config.sections import DataConfig
from ftcore.data import IGNORE_INDEX, PROCESSORS, STAGE_DATA, ProcessContext, get_template, load_rows
from ftcore.data.converter import row
from ftcore.data.processor import data_kind, infer_seqlen, tokenize_split
from ftcore.data.splits import row_features, write_splits
from ftcore.errors import ConfigError, DataError
from tests.helpers import write_dataset

OFFICIAL = Path(__file__).parent / "data" / "chat_templates"
M = -100  # IGNORE_INDEX, short for hand-worked label lists

# LLaMA-Factory's data/dataset_info.json entries for its demo files, verbatim.
LF_ENTRIES = {
    "identity": {"file_name": "identity.json"},
    "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
    "alpaca_zh_demo": {"file_name": "alpaca_zh_demo.json"},
    "glaive_toolcall_en_demo": {
        "file_name": "glaive_toolcall_en_demo.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "tools": "tools"},
    },
    "dpo_en_demo": {
        "file_name": "dpo_en_demo.json",
        "ranking": True,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    },
    "kto_en_demo": {
        "file_name": "kto_en_demo.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "kto_tag": "label"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
        },
    },
    "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}},
}
# (dataset, the stage LLaMA-Factory's examples train it with)
LF_STAGES = [
    ("identity", "sft"),
    ("alpaca_en_demo", "sft"),
    ("alpaca_zh_demo", "sft"),
    ("glaive_toolcall_en_demo", "sft"),
    ("dpo_en_demo", "dpo"),
    ("dpo_en_demo", "rm"),
    ("kto_en_demo", "kto"),
    ("c4_demo", "pt"),
    ("alpaca_en_demo", "ppo"),
]

TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
CALL = {"name": "get_weather", "arguments": {"city": "Rome"}}
TOOL_ROW = row(
    [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "function", "content": json.dumps(CALL)},
        {"role": "observation", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "It is 21 degrees."},
    ],
    tools=json.dumps(TOOLS),
)


@pytest.fixture(scope="module")
def toks():
    from transformers import AutoTokenizer

    from ftcore.builtin import ensure_builtin

    return {
        n: AutoTokenizer.from_pretrained(ensure_builtin(n))
        for n in ("tiny-qwen2", "tiny-qwen3", "tiny-llama")
    }


def ctx(tok, template: str = "qwen", cutoff_len: int = 1024, **data) -> ProcessContext:
    return ProcessContext(tok, get_template(template), cutoff_len, DataConfig(**data))


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def qa(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


# --- pt: text + eos, concatenated, cut into blocks -----------------------------------------------


def test_pt_concatenates_with_eos_and_cuts_blocks(toks):
    tok = toks["tiny-qwen2"]
    rows = [row([{"role": "user", "content": t}]) for t in ("one two three", "four", "five six")]
    eos = tok.eos_token  # the tokenizer's (LLaMA-Factory's choice for every family but llama3)
    ids = enc(tok, f"one two three{eos}") + enc(tok, f"four{eos}") + enc(tok, f"five six{eos}")
    assert ids.count(tok.eos_token_id) == 3  # eos ends every document
    out = PROCESSORS["pt"](rows, ctx(tok, cutoff_len=4))
    blocks = [ids[i : i + 4] for i in range(0, len(ids) // 4 * 4, 4)]
    assert out["input_ids"] == blocks and out["labels"] == blocks and len(blocks) == len(ids) // 4
    assert out["attention_mask"] == [[1] * 4] * len(blocks)
    assert sum(map(len, blocks)) == len(ids) - len(ids) % 4  # only the short tail is dropped


def test_pt_llama_uses_end_of_text_and_bos(toks):
    tok = toks["tiny-llama"]
    out = PROCESSORS["pt"]([row([{"role": "user", "content": "hello world"}])], ctx(tok, "llama3", 1000))
    assert out["input_ids"] == []  # shorter than one block
    out = PROCESSORS["pt"]([row([{"role": "user", "content": "hello world"}])] * 4, ctx(tok, "llama3", 4))
    flat = [i for block in out["input_ids"] for i in block]
    end = tok.convert_tokens_to_ids("<|end_of_text|>")
    assert end in flat and tok.convert_tokens_to_ids("<|eot_id|>") not in flat
    if getattr(tok, "add_bos_token", False):
        assert flat[0] == tok.bos_token_id


# --- sft: mask_history ---------------------------------------------------------------------------


def test_mask_history_trains_on_the_last_reply_only(toks):
    tok = toks["tiny-qwen2"]
    conv = row(qa("2+2?", "4") + qa("3+3?", "6"))
    (p1, r1), (p2, r2) = get_template("qwen").encode_multiturn(tok, conv["messages"])
    full = PROCESSORS["sft"]([conv], ctx(tok))
    assert full["labels"] == [[M] * len(p1) + r1 + [M] * len(p2) + r2]
    last = PROCESSORS["sft"]([conv], ctx(tok, mask_history=True))
    assert last["input_ids"] == full["input_ids"]
    assert last["labels"] == [[M] * (len(p1) + len(r1) + len(p2)) + r2]
    # a budget for one turn keeps the LAST turn with mask_history (the first one without)
    budget = len(p2) + len(r2)
    assert PROCESSORS["sft"]([conv], ctx(tok, cutoff_len=budget, mask_history=True))["input_ids"] == [p2 + r2]
    assert PROCESSORS["sft"]([conv], ctx(tok, cutoff_len=len(p1) + len(r1)))["input_ids"] == [p1 + r1]


def test_mask_history_with_train_on_prompt_is_refused():
    with pytest.raises(ValueError, match=r"mask_history and data\.train_on_prompt"):
        DataConfig(mask_history=True, train_on_prompt=True)


# --- pairwise --------------------------------------------------------------------------------------


def test_pairwise_shares_the_prompt_and_masks_it(toks):
    tok = toks["tiny-qwen2"]
    pair = row(
        [{"role": "user", "content": "Capital of Italy?"}],
        chosen={"role": "assistant", "content": "Rome."},
        rejected={"role": "assistant", "content": "It is Madrid, I think."},
    )
    prompt = enc(tok, get_template("qwen")._prefix(None)) + enc(
        tok, "<|im_start|>user\nCapital of Italy?<|im_end|>\n<|im_start|>assistant\n"
    )
    good, bad = enc(tok, "Rome.<|im_end|>\n"), enc(tok, "It is Madrid, I think.<|im_end|>\n")
    out = PROCESSORS["pairwise"]([pair], ctx(tok))
    assert out["chosen_input_ids"] == [prompt + good] and out["rejected_input_ids"] == [prompt + bad]
    assert out["chosen_labels"] == [[M] * len(prompt) + good]
    assert out["rejected_labels"] == [[M] * len(prompt) + bad]
    assert out["rejected_attention_mask"] == [[1] * (len(prompt) + len(bad))]
    # cut together: infer_seqlen on the LONGER reply decides one prompt length and one reply budget
    source_len, target_len = infer_seqlen(len(prompt), len(bad), 20)
    assert target_len < len(good) < len(bad) and source_len + target_len == 20
    cut = PROCESSORS["pairwise"]([pair], ctx(tok, cutoff_len=20))
    assert cut["chosen_input_ids"] == [prompt[:source_len] + good[:target_len]]
    assert cut["rejected_input_ids"] == [prompt[:source_len] + bad[:target_len]]
    assert cut["chosen_labels"] == [[M] * source_len + good[:target_len]]


# --- kto: KL pairs -------------------------------------------------------------------------------


def test_kto_pairs_each_prompt_with_another_rows_reply(toks):
    tok = toks["tiny-qwen2"]
    rows = [
        row(qa("Q0", "A0"), kto_tag=True),
        row(qa("Q1", "A1"), kto_tag=False),
        row(qa("Q2", "A2"), kto_tag=True),
    ]
    template = get_template("qwen")
    out = PROCESSORS["kto"](rows, ctx(tok))
    assert out["kto_tags"] == [True, False, True]
    for i, other in enumerate((2, 1, 0)):  # row i takes the reply of row n-1-i, as LLaMA-Factory does
        prompt, reply = template.encode_oneturn(tok, rows[i]["messages"])
        kl_prompt, kl_reply = template.encode_oneturn(
            tok, [rows[i]["messages"][0], rows[other]["messages"][1]]
        )
        assert kl_prompt == prompt
        assert out["input_ids"][i] == prompt + reply and out["labels"][i] == [M] * len(prompt) + reply
        assert out["kl_input_ids"][i] == prompt + kl_reply
        assert out["kl_labels"][i] == [M] * len(prompt) + kl_reply
        assert out["kl_attention_mask"][i] == [1] * len(prompt + kl_reply)


# --- unsupervised ---------------------------------------------------------------------------------


def test_unsupervised_prompt_and_reference(toks):
    tok = toks["tiny-qwen3"]
    template = get_template("qwen3")
    with_answer, prompt_only = row(qa("Hi", "Hello!")), row([{"role": "user", "content": "Hi"}])
    out = PROCESSORS["unsupervised"]([with_answer, prompt_only], ctx(tok, "qwen3"))
    prompt = template.encode_prompt(tok, [{"role": "user", "content": "Hi"}])
    assert out["input_ids"] == [prompt, prompt]
    assert out["labels"] == [template.encode_oneturn(tok, with_answer["messages"])[1], []]
    assert out["attention_mask"] == [[1] * len(prompt)] * 2


# --- tokenize_split: the Arrow path gives the processor's ids, for any number of workers -----------


@pytest.mark.parametrize(
    ("name", "stage"), [("c4_demo", "pt"), ("kto_en_demo", "kto"), ("dpo_en_demo", "dpo")]
)
def test_tokenize_split_equals_the_processor(toks, data_dir: Path, name, stage):
    rows = load_rows(data_dir, name, kind=data_kind(stage))
    context = ctx(toks["tiny-qwen2"], cutoff_len=48)
    expected = PROCESSORS[STAGE_DATA[stage]](rows, context)
    arrow = datasets.Dataset.from_list(rows, features=row_features())
    for num_proc in (None, 2):
        assert tokenize_split(arrow, stage, context, num_proc=num_proc).to_dict() == expected


# --- tool calls -----------------------------------------------------------------------------------


def _openai(messages: list[dict[str, str]]) -> list[dict]:
    """The same conversation as the official templates take it: tool_calls and role 'tool'."""
    out: list[dict] = []
    for m in messages:
        if m["role"] == "function":
            call = json.loads(m["content"])
            out.append(
                {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": call}]}
            )
        elif m["role"] == "observation":
            out.append({"role": "tool", "content": m["content"]})
        else:
            out.append(m)
    return out


@pytest.mark.parametrize(
    ("name", "tok_name", "jinja"),
    [("qwen", "tiny-qwen2", "qwen2.5-instruct.jinja"), ("qwen3", "tiny-qwen3", "qwen3.jinja")],
)
@pytest.mark.parametrize("system", [None, "Be brief."])
def test_tool_calls_render_like_the_official_qwen_templates(toks, name, tok_name, jinja, system):
    tok = toks[tok_name]
    messages = ([{"role": "system", "content": system}] if system else []) + _openai(TOOL_ROW["messages"])
    official = tok.apply_chat_template(
        messages,
        tools=[{"type": "function", "function": t} for t in TOOLS],
        chat_template=(OFFICIAL / jinja).read_text(),
        tokenize=True,
    )["input_ids"]
    ours = PROCESSORS["sft"]([{**TOOL_ROW, "system": system}], ctx(tok, name))["input_ids"][0]
    assert tok.decode(ours) == tok.decode(list(official))
    assert ours == list(official)


def test_tool_calls_llama3_as_llamafactory_writes_them(toks):
    tok = toks["tiny-llama"]
    pairs = get_template("llama3").encode_multiturn(tok, TOOL_ROW["messages"], "Sys. ", TOOL_ROW["tools"])
    text = [tok.decode(p) + "|" + tok.decode(r) for p, r in pairs]
    tool_json = json.dumps({"type": "function", "function": TOOLS[0]}, indent=4)
    system = (
        "Sys. Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
        "You have access to the following functions. To call a function, please respond with JSON for a "
        "function call. Respond in the format "
        '{"name": function name, "parameters": dictionary of function arguments}. Do not use variables.\n\n'
        f"{tool_json}"  # trimmed, like every llama3 content
    )
    head = "<|start_header_id|>{}<|end_header_id|>\n\n"
    assert text == [
        "<|begin_of_text|>"
        + head.format("system")
        + system
        + "<|eot_id|>"
        + head.format("user")
        + "Weather in Rome?<|eot_id|>"
        + head.format("assistant")
        + '|{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot_id|>',
        head.format("ipython")
        + '{"temp": 21}<|eot_id|>'
        + head.format("assistant")
        + "|It is 21 degrees.<|eot_id|>",
    ]


def test_tools_need_a_template_with_a_tool_format(toks):
    with pytest.raises(DataError, match=r"chat template 'chatml' has no tool format.*qwen"):
        PROCESSORS["sft"]([TOOL_ROW], ctx(toks["tiny-qwen2"], "chatml"))


def test_reasoning_kept_in_the_last_turn_only_qwen3(toks):
    tok = toks["tiny-qwen3"]
    conv = row(
        qa("1+1?", "<think>\none and one\n</think>\n\n2") + qa("2+2?", "<think>\ntwo and two\n</think>\n\n4")
    )
    (_, r1), (_, r2) = get_template("qwen3").encode_multiturn(tok, conv["messages"])
    assert (
        tok.decode(r1) == "2<|im_end|>\n"
        and tok.decode(r2) == "<think>\ntwo and two\n</think>\n\n4<|im_end|>\n"
    )
    (_, _), (q2, s2) = get_template("qwen3_nothink").encode_multiturn(tok, conv["messages"])
    assert tok.decode(q2).endswith("<think>\n\n</think>\n\n") and tok.decode(s2) == "4<|im_end|>\n"


# --- bad rows: named by file and row, before tokenizing -------------------------------------------

SHARE = {"formatting": "sharegpt"}
PAIR_ENTRY = {**LF_ENTRIES["dpo_en_demo"], "file_name": "d.json"}
KTO_ENTRY = {**LF_ENTRIES["kto_en_demo"], "file_name": "d.json"}
GOOD_PAIR = {
    "conversations": [{"from": "human", "value": "q"}],
    "chosen": {"from": "gpt", "value": "a"},
    "rejected": {"from": "gpt", "value": "b"},
}
GOOD_KTO = {"messages": qa("q", "a"), "label": True}


def _turns(*pairs: tuple[str, str]) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in pairs]}


@pytest.mark.parametrize(
    ("entry", "good", "bad", "kind", "message"),
    [
        (
            PAIR_ENTRY,
            GOOD_PAIR,
            {**GOOD_PAIR, "chosen": None},
            "pairwise",
            "missing required column 'chosen'",
        ),
        (PAIR_ENTRY, GOOD_PAIR, {**GOOD_PAIR, "rejected": "b"}, "pairwise", "'rejected' must be one message"),
        (
            PAIR_ENTRY,
            GOOD_PAIR,
            {**GOOD_PAIR, "chosen": {"from": "human", "value": "a"}},
            "pairwise",
            "expected 'gpt'",
        ),
        (
            {**SHARE, "file_name": "d.json"},
            _turns(("human", "q"), ("gpt", "a")),
            _turns(("human", "q"), ("observation", "r")),
            "sft",
            "message 1 has from='observation'",
        ),
        (
            {**SHARE, "file_name": "d.json"},
            _turns(("human", "q"), ("gpt", "a")),
            _turns(("human", "q"), ("gpt", "a"), ("observation", "r"), ("gpt", "b")),
            "sft",
            "message 2 is an observation but does not follow a function_call",
        ),
        (
            {**SHARE, "file_name": "d.json"},
            _turns(("human", "q"), ("gpt", "a")),
            _turns(
                ("human", "q"),
                ("function_call", '{"name": "f", "arguments": {}}'),
                ("human", "x"),
                ("gpt", "b"),
            ),
            "sft",
            "message 2 follows a function_call but is not an observation",
        ),
        (
            {**SHARE, "file_name": "d.json"},
            _turns(("human", "q"), ("gpt", "a")),
            _turns(("human", "q"), ("function_call", "get_weather(Rome)")),
            "sft",
            "function_call content is not valid JSON",
        ),
        (KTO_ENTRY, GOOD_KTO, {**GOOD_KTO, "label": "yes"}, "kto", "kto_tag\\) must be true or false"),
        (
            KTO_ENTRY,
            GOOD_KTO,
            {"messages": qa("q", "a")},
            "kto",
            "stage kto needs a true/false 'label' column",
        ),
        (
            {**SHARE, "file_name": "d.json", "columns": {"tools": "tools"}},
            _turns(("human", "q"), ("gpt", "a")),
            {**_turns(("human", "q"), ("gpt", "a")), "tools": "[{oops"},
            "sft",
            "column 'tools' is not valid JSON",
        ),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path: Path, entry, good, bad, kind, message):
    write_dataset(tmp_path, {"d": entry}, {"d.json": [good, good, bad]})
    with pytest.raises(DataError, match=rf"d\.json: row 2: .*{message}"):
        load_rows(tmp_path, "d", kind=kind)


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("dpo_en_demo", "sft", "is a preference \\(ranking\\) dataset; use it with stage rm, dpo"),
        ("alpaca_en_demo", "pairwise", 'needs "ranking": true'),
        ("alpaca_en_demo", "kto", "stage kto needs a kto_tag column"),
    ],
)
def test_dataset_kind_mismatch_is_a_config_error(data_dir: Path, name, kind, message):
    with pytest.raises(ConfigError, match=rf"dataset '{name}' in .*dataset_info.json.*{message}"):
        load_rows(data_dir, name, kind=kind)


def test_empty_check_depends_on_the_kind(tmp_path: Path):
    write_dataset(
        tmp_path, {"d": {"file_name": "d.json"}}, {"d.json": [{"instruction": "q", "output": ""}] * 2}
    )
    with pytest.raises(DataError, match="all 2 rows have an empty response"):
        load_rows(tmp_path, "d")
    assert len(load_rows(tmp_path, "d", kind="unsupervised")) == 2  # prompts need no response
    write_dataset(
        tmp_path, {"p": {"file_name": "p.json", "columns": {"prompt": "text"}}}, {"p.json": [{"text": "x"}]}
    )
    assert load_rows(tmp_path, "p", kind="pt") == [row([{"role": "user", "content": "x"}])]
    with pytest.raises(DataError, match="missing required column 'output'"):
        load_rows(tmp_path, "p")  # sft needs a response


# --- LLaMA-Factory's entries, unchanged -----------------------------------------------------------


def test_llamafactory_entries_are_shipped_verbatim(data_dir: Path):
    info = json.loads((data_dir / "dataset_info.json").read_text())
    assert {name: info[name] for name in LF_ENTRIES} == LF_ENTRIES


@pytest.mark.parametrize(("name", "stage"), LF_STAGES)
def test_llamafactory_demo_files_run_with_their_stage(toks, tmp_path: Path, data_dir: Path, name, stage):
    dataset_dir = tmp_path / "lf"
    dataset_dir.mkdir()
    (dataset_dir / "dataset_info.json").write_text(json.dumps(LF_ENTRIES))
    (dataset_dir / LF_ENTRIES[name]["file_name"]).write_bytes(
        (data_dir / LF_ENTRIES[name]["file_name"]).read_bytes()
    )
    counts = write_splits(DataConfig(dataset=[name]), dataset_dir, tmp_path / "rows", data_kind(stage))
    assert counts["train"] >= 20
    rows = datasets.load_from_disk(str(tmp_path / "rows" / "train"))
    out = tokenize_split(rows, stage, ctx(toks["tiny-qwen2"], cutoff_len=96))
    assert len(out) > 0 and set(out.column_names) == set(PROCESSORS[STAGE_DATA[stage]].columns)
    labels = out["chosen_labels"] if STAGE_DATA[stage] == "pairwise" else out["labels"]
    if STAGE_DATA[stage] != "unsupervised":
        assert all(any(x != IGNORE_INDEX for x in example) for example in labels)


# --- LLaMA-Factory's data keys --------------------------------------------------------------------


def test_llamafactory_data_keys(tmp_path: Path):
    from ftcore.artifacts import Artifact
    from ftcore.config import load_config
    from ftcore.steps.preprocess import resolve_template

    flat = {
        "model_name_or_path": "builtin:tiny-qwen3",
        "stage": "pt",
        "dataset": "c4_demo",
        "template": "qwen3",
    }
    flat |= {"mask_history": True, "enable_thinking": False, "output_dir": str(tmp_path / "o")}
    path = tmp_path / "lf.yaml"
    path.write_text(json.dumps(flat))
    cfg = load_config(path)
    assert (cfg.train.stage, cfg.data.mask_history, cfg.data.enable_thinking) == ("pt", True, False)
    model = Artifact(kind="model", path=str(tmp_path), fingerprint="-", metadata={"template": "qwen3"})
    assert resolve_template(cfg, model) == "qwen3_nothink"  # LLaMA-Factory's enable_thinking: false
    cfg.data.enable_thinking = True
    assert resolve_template(cfg, model) == "qwen3"
    with pytest.raises(ConfigError, match=r"mask_history and data\.train_on_prompt"):
        load_config(path, ["data.train_on_prompt=true"])
