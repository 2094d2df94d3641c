"""Mistral v0.3 tool calls, GLM-4.5 reasoning (+ its tool calls) and Seed-OSS reasoning encode what the
families' OFFICIAL Jinja templates render (tests/data/chat_templates: mistral-instruct-v0.3.jinja,
glm-4.6.jinja, seed-oss.jinja; sources in README.md there), a dataset row with tool calls trains
through them, and the Jinja ftflow writes into a trained model renders the same ids again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftcore.data import get_template, infer_template
from ftcore.data.tools import call_ids
from ftcore.errors import DataError
from tests.helpers import TOOL

OFFICIAL = Path(__file__).parent / "data" / "chat_templates"
MISTRAL_JINJA = (OFFICIAL / "mistral-instruct-v0.3.jinja").read_text()
GLM_JINJA = (OFFICIAL / "glm-4.6.jinja").read_text()
SEED_JINJA = (OFFICIAL / "seed-oss.jinja").read_text()
# the templates this file checks against their official Jinja (test_templates.py counts them)
VERIFIED_HERE = {"mistral", "glm4_moe", "glm4_moe_nothink", "seed_oss"}

CHAT = [
    {"role": "user", "content": "Add the two numbers.\n12 + 7"},
    {"role": "assistant", "content": "19"},
    {"role": "user", "content": "  Convert to uppercase.\nred apple \n"},
    {"role": "assistant", "content": " RED APPLE\n\n"},
]
REASONING = [
    {"role": "user", "content": "Add the two numbers.\n12 + 7"},
    {"role": "assistant", "content": "<think>\n12 plus 7 is 19.\n</think>\n\n19"},
    {"role": "user", "content": "And 3 + 4?"},
    {"role": "assistant", "content": "<think>\nthree and four\n</think>\n\n7"},
]
SEED_REASONING = [
    {"role": "user", "content": "Add the two numbers.\n12 + 7"},
    {"role": "assistant", "content": "<seed:think>\n12 plus 7 is 19.\n</seed:think>\n\n19"},
    {"role": "user", "content": "And 3 + 4?"},
    {"role": "assistant", "content": "<seed:think>three and four </seed:think> 7"},
]
CONVERSATIONS = {"single": CHAT[:2], "multi": CHAT, "reasoning": REASONING, "seed-reasoning": SEED_REASONING}
SYSTEM = "You answer in one line."
TOOLS = json.dumps([TOOL], ensure_ascii=False)
CALL = {"name": "get_weather", "arguments": {"city": "北京", "days": 2}}
# a row as a sharegpt dataset holds it: the call without an id (derived, see call_ids)
TOOL_ROW = [
    {"role": "user", "content": "Weather in Beijing?"},
    {"role": "function", "content": json.dumps(CALL, ensure_ascii=False)},
    {"role": "observation", "content": '{"temperature": 21}'},
    {"role": "assistant", "content": "It is 21 degrees."},
]
# two calls in one reply, the second with its own id (kept), answered by a JSON list of two results
TWO_CALLS = [
    {"role": "user", "content": "Weather in Beijing and Rome?"},
    {
        "role": "function",
        "content": json.dumps([CALL, {**CALL, "arguments": {"city": "Rome"}, "id": "Ab3dE6gH9"}]),
    },
    {"role": "observation", "content": '[{"temperature": 21}, "sunny"]'},
    {"role": "assistant", "content": "21 degrees, and sunny."},
]


@pytest.fixture(scope="module")
def tokenizer():
    """A small byte-level BPE tokenizer with the control tokens of Mistral's v3 tokenizer and GLM-4.5's,
    built once (the real tokenizers cannot be downloaded here; what is checked is the text around the
    special tokens, which any tokenizer that keeps them whole sees the same way)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = {"<s>", "</s>", "<unk>", "<|endoftext|>"}
    for name in VERIFIED_HERE:
        template = get_template(name)
        special.update(template.special_tokens + template.stop_words)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [m["content"] for m in CHAT + REASONING + TOOL_ROW + TWO_CALLS] + [SYSTEM, TOOLS]
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(corpus * 5, trainer=trainer)
    backend.add_special_tokens(sorted(special))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _render(tokenizer, jinja: str, messages, system=None, **kwargs) -> list[int]:
    full = ([{"role": "system", "content": system}] if system else []) + messages
    return list(
        tokenizer.apply_chat_template(full, tokenize=True, chat_template=jinja, **kwargs)["input_ids"]
    )


def _ours(tokenizer, template, messages, system=None, tools=None) -> list[int]:
    return [i for p, r in template.encode_multiturn(tokenizer, messages, system, tools) for i in p + r]


def _openai(messages: list[dict[str, str]]) -> list[dict]:
    """The conversation as the official templates take it: tool_calls with their ids (as ftflow
    derives them, or the row's own) and role 'tool' messages tied to them by tool_call_id."""
    out: list[dict] = []
    ids: list[str] = []
    for i, m in enumerate(messages):
        if m["role"] == "function":
            calls = json.loads(m["content"])
            calls = calls if isinstance(calls, list) else [calls]
            ids = call_ids(m["content"], i)
            tool_calls = [
                {"id": id_, "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c, id_ in zip(calls, ids, strict=True)
            ]
            out.append({"role": "assistant", "content": "", "tool_calls": tool_calls})
        elif m["role"] == "observation":
            results = json.loads(m["content"]) if len(ids) > 1 else [m["content"]]
            for result, id_ in zip(results, ids, strict=True):
                content = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
                out.append({"role": "tool", "tool_call_id": id_, "content": content})
        else:
            out.append(m)
    return out


# --- Mistral v0.3 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("conversation", ["single", "multi"])
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["no-system", "system"])
def test_mistral_matches_official(tokenizer, conversation, system):
    """Replies trimmed; a system prompt opens the LAST user turn. The official Jinja writes it only
    when that turn ends the conversation (a generation prompt): a training conversation with a system
    prompt is its prompt as the official Jinja renders it, then the trained reply."""
    template, messages = get_template("mistral"), CONVERSATIONS[conversation]
    template.check_tokenizer(tokenizer)
    prompt = messages[:-1]
    expected_prompt = _render(tokenizer, MISTRAL_JINJA, prompt, system, add_generation_prompt=True)
    assert template.encode_prompt(tokenizer, prompt, system) == expected_prompt
    if system is None:
        assert _ours(tokenizer, template, messages) == _render(tokenizer, MISTRAL_JINJA, messages)
    reply = _ids(tokenizer, " " + messages[-1]["content"].strip() + "</s>")
    assert _ours(tokenizer, template, messages, system) == expected_prompt + reply


@pytest.mark.parametrize("row", [TOOL_ROW, TWO_CALLS], ids=["one-call", "two-calls"])
def test_mistral_tool_calls_match_official(tokenizer, row):
    """[AVAILABLE_TOOLS] before the last user turn, [TOOL_CALLS] [...] with 9-character ids, one
    [TOOL_RESULTS] per call tied to it by call_id, as the official v0.3 template writes them."""
    template, official = get_template("mistral"), _openai(row)
    expected = _render(tokenizer, MISTRAL_JINJA, official, tools=[TOOL])
    assert _ours(tokenizer, template, row, tools=TOOLS) == expected
    prompt = _render(tokenizer, MISTRAL_JINJA, official[:-1], tools=[TOOL], add_generation_prompt=True)
    assert template.encode_prompt(tokenizer, row[:-1], tools=TOOLS) == prompt
    # the system prompt goes into the last user turn, after the tool list
    first = _render(tokenizer, MISTRAL_JINJA, official[:1], SYSTEM, tools=[TOOL], add_generation_prompt=True)
    assert template.encode_prompt(tokenizer, row[:1], SYSTEM, TOOLS) == first


def test_mistral_call_ids():
    """A row's own 9-character alphanumeric id is kept; a missing (or invalid) one is derived from the
    call and its place: 9 alphanumeric characters, stable, different for the calls of a conversation."""
    derived = call_ids(TWO_CALLS[1]["content"], 1)
    assert derived[1] == "Ab3dE6gH9"
    assert len(derived[0]) == 9 and derived[0].isalnum() and derived[0].isascii()
    assert call_ids(TWO_CALLS[1]["content"], 1) == derived  # the same row, the same ids
    assert call_ids(TOOL_ROW[1]["content"], 1) != call_ids(TOOL_ROW[1]["content"], 5)
    invalid = json.dumps({**CALL, "id": "call_0123456789"})
    assert call_ids(invalid, 1) == call_ids(json.dumps(CALL), 1)


def test_mistral_tool_errors(tokenizer):
    template = get_template("mistral")
    bad = [*TWO_CALLS[:2], {"role": "observation", "content": "not a list"}, TWO_CALLS[3]]
    with pytest.raises(DataError, match="answers 2 calls, so it must be a JSON list of 2"):
        template.encode_multiturn(tokenizer, bad, tools=TOOLS)


def test_mistral_tool_row_trains(tokenizer):
    """A sharegpt-style dataset row with a function call trains through `mistral`: the labels are the
    [TOOL_CALLS] reply and the final answer; the tool list and the tool result are prompt (masked)."""
    from ftcore.data import IGNORE_INDEX, PROCESSORS, ProcessContext
    from ftcore.data.converter import row

    context = ProcessContext(tokenizer, get_template("mistral"), 1024)
    out = PROCESSORS["sft"]([row(TOOL_ROW, tools=TOOLS)], context)
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert ids == _render(tokenizer, MISTRAL_JINJA, _openai(TOOL_ROW), tools=[TOOL])
    token = tokenizer.convert_tokens_to_ids
    trained = [i for i in labels if i != IGNORE_INDEX]
    assert token("[TOOL_CALLS]") in trained and trained.count(token("</s>")) == 2
    assert token("[AVAILABLE_TOOLS]") not in trained and token("[TOOL_RESULTS]") not in trained
    text = tokenizer.decode(trained)
    assert '"name": "get_weather"' in text and "It is 21 degrees." in text


# --- GLM-4.5 --------------------------------------------------------------------------------------


def _no_reasoning(messages):
    return [m | {"content": m["content"].split("</think>")[-1]} for m in messages]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["no-system", "system"])
def test_glm4_moe_matches_official(tokenizer, conversation, system):
    """Thinking on: every reply opens with a reasoning block, empty in history turns (their reasoning
    is dropped as the official template drops it), the last reply's kept. Thinking off
    (enable_thinking=False): "/nothink" after each user turn, the empty block in the prompt, and no
    reasoning trained. Both end with LLaMA-Factory's efficient_eos <|endoftext|>."""
    messages, eos = CONVERSATIONS[conversation], _ids(tokenizer, "<|endoftext|>")
    for name, kwargs in (("glm4_moe", {}), ("glm4_moe_nothink", {"enable_thinking": False})):
        template = get_template(name)
        template.check_tokenizer(tokenizer)
        official = messages if kwargs == {} else _no_reasoning(messages)
        expected = _render(tokenizer, GLM_JINJA, official, system, **kwargs) + eos
        assert _ours(tokenizer, template, messages, system) == expected, name
        prompt = _render(tokenizer, GLM_JINJA, messages[:-1], system, add_generation_prompt=True, **kwargs)
        assert template.encode_prompt(tokenizer, messages[:-1], system) == prompt, name
    text = tokenizer.decode(_ours(tokenizer, get_template("glm4_moe"), REASONING))
    assert "12 plus 7" not in text and "three and four" in text
    ((_, response),) = get_template("glm4_moe").encode_multiturn(tokenizer, CHAT[:2])
    assert tokenizer.decode(response) == "\n<think></think>\n19<|endoftext|>"
    ((prompt, response),) = get_template("glm4_moe_nothink").encode_multiturn(tokenizer, CHAT[:2])
    assert tokenizer.decode(prompt).endswith("12 + 7/nothink<|assistant|>\n<think></think>")
    assert tokenizer.decode(response) == "\n19<|endoftext|>"


@pytest.mark.parametrize("row", [TOOL_ROW, TWO_CALLS], ids=["one-call", "two-calls"])
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["no-system", "system"])
def test_glm4_moe_tool_calls_match_official(tokenizer, row, system):
    """GLM-4.5's tool list in its own system turn, <tool_call>name <arg_key>/<arg_value> calls and
    one <tool_response> per result, as the official template writes them."""
    template = get_template("glm4_moe")
    official = _openai(row)  # several calls: one tool message per result, under one <|observation|>
    expected = _render(tokenizer, GLM_JINJA, official, system, tools=[TOOL])
    assert _ours(tokenizer, template, row, system, TOOLS) == expected + _ids(tokenizer, "<|endoftext|>")
    prompt = _render(tokenizer, GLM_JINJA, official[:-1], system, tools=[TOOL], add_generation_prompt=True)
    assert template.encode_prompt(tokenizer, row[:-1], system, TOOLS) == prompt


def test_infer_glm4_moe(tmp_path: Path):
    """`template: auto` on a GLM-4.5 folder: model_type glm4_moe and its official chat template."""
    tokens = {
        str(i): {"content": t, "special": True} for i, t in enumerate(get_template("glm4_moe").special_tokens)
    }
    config = {"added_tokens_decoder": tokens, "chat_template": GLM_JINJA}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "glm4_moe"}))
    assert infer_template(tmp_path) == "glm4_moe"


# --- Seed-OSS -------------------------------------------------------------------------------------


def _seed_official(messages):
    """As the official Seed-OSS template takes a conversation: the last reply's reasoning in
    `reasoning_content`, earlier replies without theirs (ftflow drops them, as LLaMA-Factory does)."""
    out = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and "</seed:think>" in m["content"]:
            reasoning, answer = m["content"].split("</seed:think>")
            m = {"role": "assistant", "content": answer}
            if i == len(messages) - 1:
                m["reasoning_content"] = reasoning.replace("<seed:think>", "")
        out.append(m)
    return out


@pytest.mark.parametrize("conversation", ["single", "multi", "seed-reasoning"])
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["no-system", "system"])
def test_seed_oss_matches_official(tokenizer, conversation, system):
    """Turns "<seed:bos>role\n...<seed:eos>"; the last reply's reasoning as <seed:think>...</seed:think>
    before its answer, no block when it has none; generation prompt "<seed:bos>assistant\n"."""
    template, messages = get_template("seed_oss"), CONVERSATIONS[conversation]
    template.check_tokenizer(tokenizer)
    expected = _render(tokenizer, SEED_JINJA, _seed_official(messages), system)
    assert _ours(tokenizer, template, messages, system) == expected
    prompt = _render(tokenizer, SEED_JINJA, _seed_official(messages[:-1]), system, add_generation_prompt=True)
    assert template.encode_prompt(tokenizer, messages[:-1], system) == prompt
    text = tokenizer.decode(_ours(tokenizer, template, SEED_REASONING))
    assert "12 plus 7" not in text and text.endswith("<seed:think>three and four</seed:think>\n7<seed:eos>")
    ((_, response),) = template.encode_multiturn(tokenizer, CHAT[:2])
    assert tokenizer.decode(response) == "19<seed:eos>"


# --- the chat_template ftflow writes into a trained model ----------------------------------------


@pytest.mark.parametrize("name", sorted(VERIFIED_HERE))
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["no-system", "system"])
def test_our_jinja_renders_our_ids(tokenizer, name, system):
    """What transformers / vLLM serve a trained model with renders the trained ids: plain and
    reasoning conversations, tool calls (with their ids) and generation prompts."""
    template = get_template(name)
    jinja = template.chat_template()
    for messages in (*CONVERSATIONS.values(), TOOL_ROW, TWO_CALLS):
        tools = TOOLS if messages in (TOOL_ROW, TWO_CALLS) else None
        if tools and template.tool_format is None:
            continue
        served, kwargs = _openai(messages), {"tools": [TOOL]} if tools else {}
        assert _render(tokenizer, jinja, served, system, **kwargs) == _ours(
            tokenizer, template, messages, system, tools
        ), messages
        prompt = _render(tokenizer, jinja, served[:-1], system, add_generation_prompt=True, **kwargs)
        assert template.encode_prompt(tokenizer, messages[:-1], system, tools) == prompt
