"""The template families of ftcore/data/templates/more.yaml encode what each family's OFFICIAL Jinja
chat template renders (tests/data/chat_templates, sources in SOURCES-B.md); families without one
are checked on their rendered text. The loader reads every templates/*.yaml."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ftcore.data import template as template_module
from ftcore.data.template import get_template
from ftcore.errors import ConfigError, DataError
from tests.helpers import MULTI_CJK as MULTI
from tests.helpers import REASONING, SINGLE, TOOL
from tests.helpers import SYSTEM_PLAIN as SYSTEM

OFFICIAL = Path(__file__).parent / "data" / "chat_templates"
MORE = yaml.safe_load((template_module.TEMPLATES_DIR / "more.yaml").read_text())

CONVERSATIONS = {"single": SINGLE, "multi": MULTI}
DS_BOS, DS_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"


@dataclass(frozen=True)
class Official:
    """An official template file; `bos` / `eos` are what the family's tokenizer passes it, and
    `after_last` what ftflow trains after the last reply that the file does not write."""

    file: str
    bos: str = "<s>"
    eos: str = "</s>"
    after_last: str = ""


VERIFIED = {
    "deepseek": Official("deepseek-v2-chat.jinja", DS_BOS, DS_EOS),
    "deepseek3": Official("deepseek-v3.jinja", DS_BOS, DS_EOS),
    "deepseekr1": Official("deepseek-r1-0528.jinja", DS_BOS, DS_EOS),
    "deepseekcoder": Official("deepseek-coder-instruct.jinja", DS_BOS, "<|EOT|>"),
    "yi": Official("yi-chat.jinja"),
    "glm4": Official("glm-4-9b-chat.jinja", after_last="<|endoftext|>"),
    "intern2": Official("internlm2-chat.jinja"),
    "exaone": Official("exaone-3.5-instruct.jinja", eos="[|endofturn|]"),
    "granite3": Official("granite-3.0-instruct.jinja", eos="<|end_of_text|>"),
    "granite4": Official("granite-4.0.jinja", eos="<|end_of_text|>"),
    "olmo": Official("olmo-2-instruct.jinja", "<|endoftext|>", "<|endoftext|>", after_last="\n"),
    "cohere": Official("command-r.jinja", "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"),
    "dbrx": Official("dbrx-instruct.jinja", eos="<|im_end|>", after_last="\n"),
}


@pytest.fixture(scope="module")
def tokenizer():
    """A small byte-level BPE tokenizer with every special token of more.yaml's templates, built once:
    the families' own tokenizers cannot be downloaded here, and what is checked is the text around
    the special tokens, which any tokenizer that keeps them whole sees the same way."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = {"<s>", "</s>", "<unk>"}
    for entry in MORE.values():
        words = entry.get("special_tokens", []) + entry.get("stop_words", [])
        special.update(words + ([entry["efficient_eos"]] if entry.get("efficient_eos") else []))
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [m["content"] for m in SINGLE + MULTI + REASONING] + [SYSTEM, "User: Assistant: ### Response:"]
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator(corpus * 5, trainer=trainer)
    backend.add_special_tokens(sorted(special))
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<unk>")


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _official(tokenizer, name: str, messages, system=None, **kwargs) -> list[int]:
    spec = VERIFIED[name]
    full = ([{"role": "system", "content": system}] if system else []) + messages
    jinja = (OFFICIAL / spec.file).read_text()
    out = tokenizer.apply_chat_template(
        full, tokenize=True, chat_template=jinja, bos_token=spec.bos, eos_token=spec.eos, **kwargs
    )
    return list(out["input_ids"])


def _ours(tokenizer, template, messages, system=None, tools=None) -> list[int]:
    return [i for p, r in template.encode_multiturn(tokenizer, messages, system, tools) for i in p + r]


@pytest.mark.parametrize("name", VERIFIED)
@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["default-system", "system"])
def test_encoding_matches_official_template(tokenizer, name, conversation, system):
    """Training ids == the official template's, for whole conversations and generation prompts.
    A template whose default system prompt the official Jinja does not write itself (InternLM2's
    comes from its chat()) is compared with that prompt given explicitly."""
    template, messages = get_template(name), CONVERSATIONS[conversation]
    template.check_tokenizer(tokenizer)
    official_system = system or template.default_system
    prompt = messages[:-1]
    expected_prompt = _official(tokenizer, name, prompt, official_system, add_generation_prompt=True)
    assert template.encode_prompt(tokenizer, prompt, system) == expected_prompt
    if template.thinking is not None:  # the official template drops the reasoning; see the test below
        return
    expected = _official(tokenizer, name, messages, official_system) + _ids(
        tokenizer, VERIFIED[name].after_last
    )
    assert _ours(tokenizer, template, messages, system) == expected


def test_deepseekr1_reasoning(tokenizer):
    """R1: history turns lose their reasoning exactly as the official template drops it; the last
    reply is trained as the model writes it after the prompt: <think> reasoning </think> answer."""
    template = get_template("deepseekr1")
    for messages in (REASONING, MULTI):
        prompt = _official(tokenizer, "deepseekr1", messages[:-1], add_generation_prompt=True)
        assert template.encode_prompt(tokenizer, messages[:-1]) == prompt
        reasoning, answer = template.thinking.split(messages[-1]["content"])
        last = f"<think>\n{reasoning}\n</think>\n\n{answer.lstrip()}{DS_EOS}"
        assert _ours(tokenizer, template, messages) == prompt + _ids(tokenizer, last)
    text = tokenizer.decode(_ours(tokenizer, template, REASONING))
    assert "12 plus 7" not in text and "three and four" in text
    (_, response), *_ = template.encode_multiturn(tokenizer, SINGLE)
    assert tokenizer.decode(response) == f"<think>\n\n</think>\n\nenots{DS_EOS}"


def test_glm4_tool_calls_match_official(tokenizer):
    """GLM-4's tool list, a call ("name\\n{arguments}") and a tool result, as the official template
    writes them (it reads tools from a system message and the called name from `metadata`)."""
    template, args = get_template("glm4"), {"city": "北京"}
    ours = [
        {"role": "user", "content": "Weather in Beijing?"},
        {"role": "function", "content": json.dumps({"name": "get_weather", "arguments": args})},
        {"role": "observation", "content": '{"temperature": 21}'},
        {"role": "assistant", "content": "It is 21 degrees."},
    ]
    official = [
        {"role": "system", "content": "", "tools": [TOOL]},
        ours[0],
        {"role": "assistant", "metadata": "get_weather", "content": json.dumps(args, ensure_ascii=False)},
        ours[2],
        ours[3],
    ]
    expected = _official(tokenizer, "glm4", official) + _ids(tokenizer, "<|endoftext|>")
    assert _ours(tokenizer, template, ours, tools=json.dumps([TOOL])) == expected
    two_calls = json.dumps([{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}])
    with pytest.raises(DataError, match="one function per reply"):
        template.encode_multiturn(tokenizer, [ours[0], {"role": "function", "content": two_calls}])


def test_granite4_tool_calls_match_official(tokenizer):
    """Granite 4.0: the tool list after the system prompt, Qwen-style <tool_call> calls, the tool
    result in a user turn, as the official template writes them."""
    template, args = get_template("granite4"), {"city": "北京"}
    call = {"name": "get_weather", "arguments": args}
    ours = [
        {"role": "user", "content": "Weather in Beijing?"},
        {"role": "function", "content": json.dumps([call, call])},
        {"role": "observation", "content": '{"temperature": 21}'},
        {"role": "assistant", "content": "It is 21 degrees."},
    ]
    calls = [{"type": "function", "function": call}] * 2
    official = [
        ours[0],
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": ours[2]["content"]},
    ]
    for system in (None, SYSTEM):
        full = ([{"role": "system", "content": system}] if system else []) + official + [ours[3]]
        rendered = tokenizer.apply_chat_template(
            full, tokenize=True, tools=[TOOL], chat_template=(OFFICIAL / "granite-4.0.jinja").read_text()
        )
        assert _ours(tokenizer, template, ours, system, tools=json.dumps([TOOL])) == list(
            rendered["input_ids"]
        )


def test_templates_without_tools_refuse_tool_rows(tokenizer):
    with pytest.raises(DataError, match=r"'granite3' has no tool format.*glm4"):
        get_template("granite3").encode_multiturn(tokenizer, SINGLE, tools=json.dumps([TOOL]))


# Families without an official Jinja here: the text of a single turn without system, as each
# family's own code (LLaMA-Factory's templates) writes it.
TEXT = {
    "chatglm3": "[gMASK]sop<|user|>\nReverse the letters of the word.\nstone<|assistant|>\nenots</s>",
    "codegeex4": "[gMASK]<sop><|system|>\n你是一位智能编程助手，你叫CodeGeeX。",
    "intern": "<s><|System|>:You are an AI assistant whose name is InternLM (书生·浦语).",
    "falcon": "User: Reverse the letters of the word.\nstone\nFalcon:enots\n<|endoftext|>",
    "breeze": "<s>[INST] Reverse the letters of the word.\nstone [/INST] enots</s>",
    "cpm": "<s><用户>Reverse the letters of the word.\nstone<AI>enots</s>",
    "cpm3": "<s><|im_start|>user\nReverse the letters of the word.\nstone<|im_end|>\n<|im_start|>assistant\n",
    "cpm4": "<s><|im_start|>user\nReverse the letters of the word.\nstone<|im_end|>\n<|im_start|>assistant\n",
    "hunyuan": "<|startoftext|>Reverse the letters of the word.\nstone<|extra_0|>enots<|eos|>",
    "orion": "<s>Human: Reverse the letters of the word.\nstone\n\nAssistant: </s>enots</s>",
    "skywork_o1": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are Skywork-o1,",
    "solar": "### User:\nReverse the letters of the word.\nstone\n\n### Assistant:\nenots</s>",
    "starchat": "<|user|>\nReverse the letters of the word.\nstone<|end|>\n<|assistant|>enots<|end|>\n",
    "telechat": "<_user>Reverse the letters of the word.\nstone<_bot>enots<_end>",
    "telechat2": "<_system>你是中国电信星辰语义大模型，英文名是TeleChat，",
    "xverse": "Human: Reverse the letters of the word.\nstone\n\nAssistant: enots<|endoftext|>",
    "index": "reserved_0Reverse the letters of the word.\nstonereserved_1enots</s>",
    "xuanyuan": "以下是用户和人工智能助手之间的对话。",
    "yayi": "<|System|>:\nYou are a helpful, respectful and honest assistant named YaYi",
    "yuan": "Reverse the letters of the word.\nstone<sep>enots<eod>\n",
    "baichuan": "<reserved_102>Reverse the letters of the word.\nstone<reserved_103>enots</s>",
    "baichuan2": "<reserved_106>Reverse the letters of the word.\nstone<reserved_107>enots</s>",
    "aquila": "System: A chat between a curious human and an artificial intelligence assistant.",
    "bluelm": "[|Human|]:Reverse the letters of the word.\nstone[|AI|]:enots</s>",
}


@pytest.mark.parametrize("name", TEXT)
def test_rendered_text(tokenizer, name):
    template = get_template(name)
    template.check_tokenizer(tokenizer)
    text = tokenizer.decode(_ours(tokenizer, template, SINGLE))
    assert text.startswith(TEXT[name])
    assert "Reverse the letters of the word.\nstone" in text and "enots" in text


def test_every_more_template_is_checked():
    from tests.test_templates_tools import VERIFIED_HERE  # glm4_moe: checked there

    assert set(MORE) == set(VERIFIED) | set(TEXT) | (VERIFIED_HERE & set(MORE))


@pytest.mark.parametrize("name", sorted(MORE))
def test_our_jinja_renders_our_ids(tokenizer, name):
    """The chat_template written into trained models renders exactly what training encoded,
    including efficient_eos after the last reply and R1's reasoning."""
    template = get_template(name)
    jinja = template.chat_template()
    for messages in (SINGLE, MULTI, REASONING):
        for system in (None, SYSTEM):
            full = ([{"role": "system", "content": system}] if system else []) + messages
            rendered = tokenizer.apply_chat_template(full, tokenize=True, chat_template=jinja)["input_ids"]
            assert _ours(tokenizer, template, messages, system) == list(rendered)
            prompt = full[:-1]
            rendered = tokenizer.apply_chat_template(
                prompt, tokenize=True, chat_template=jinja, add_generation_prompt=True
            )["input_ids"]
            assert template.encode_prompt(tokenizer, messages[:-1], system) == list(rendered)


def test_efficient_eos_only_after_the_last_reply(tokenizer):
    template = get_template("glm4")
    pairs = template.encode_multiturn(tokenizer, MULTI)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert [response[-1] == eos for _, response in pairs] == [False, False, True]
    assert eos not in template.encode_prompt(tokenizer, MULTI[:-1])
    assert eos in template.stop_token_ids(tokenizer)
    assert "efficient_eos" in template.definition()
    # what sft trains on: the end token once, at the end, inside the labels
    from ftcore.data.processor import IGNORE_INDEX, encode_sft_example

    _, labels, _ = encode_sft_example(pairs, cutoff_len=1024, train_on_prompt=False)
    assert labels[-1] == eos and labels.count(eos) == 1 and labels[0] == IGNORE_INDEX


def test_loader_reads_every_yaml_and_refuses_a_name_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    entry = 'format_system: "{content}\\n"\nformat_user: "U: {content}\\nA: "\n'
    entry += 'format_assistant: "{content}\\n"\n'
    (tmp_path / "a.yaml").write_text("one:\n  " + entry.replace("\n", "\n  "))
    (tmp_path / "b.yaml").write_text("two:\n  " + entry.replace("\n", "\n  "))
    (tmp_path / "notes.txt").write_text("not read")
    monkeypatch.setattr(template_module, "TEMPLATES_DIR", tmp_path)
    template_module._load_all.cache_clear()
    try:
        assert template_module.list_templates() == ["one", "two"]
        (tmp_path / "c.yaml").write_text("one:\n  " + entry.replace("\n", "\n  "))
        template_module._load_all.cache_clear()
        with pytest.raises(ConfigError, match=r"'one' is defined twice: in .*a\.yaml and in .*c\.yaml"):
            template_module.list_templates()
    finally:
        monkeypatch.undo()
        template_module._load_all.cache_clear()
    assert {"qwen", "glm4", "deepseekr1"} <= set(template_module.list_templates())


# (config.json model_type, official file, expected template): `template: auto` on a local model.
INFERRED = [
    ("deepseek_v3", "deepseek-v3.jinja", "deepseek3"),
    ("deepseek_v3", "deepseek-r1-0528.jinja", "deepseekr1"),
    ("qwen2", "deepseek-r1-0528.jinja", "deepseekr1"),  # R1-Distill-Qwen
    ("qwen2", "qwen2-instruct.jinja", "qwen2"),  # a plain Qwen2 is not taken for R1
    ("llama", "deepseek-v2-chat.jinja", "deepseek"),
    ("llama", "deepseek-coder-instruct.jinja", "deepseekcoder"),
    ("llama", "yi-chat.jinja", "yi"),
    ("llama", "llama3-instruct.jinja", "llama3"),  # nor a Llama 3 for a DeepSeek or Yi
    ("chatglm", "glm-4-9b-chat.jinja", "glm4"),
    ("internlm2", "internlm2-chat.jinja", "intern2"),
    ("exaone", "exaone-3.5-instruct.jinja", "exaone"),
    ("granite", "granite-3.0-instruct.jinja", "granite3"),
    ("granitemoehybrid", "granite-4.0.jinja", "granite4"),
    ("olmo2", "olmo-2-instruct.jinja", "olmo"),
    ("cohere", "command-r.jinja", "cohere"),
    ("dbrx", "dbrx-instruct.jinja", "dbrx"),
]


@pytest.mark.parametrize(
    ("model_type", "file", "expected"), INFERRED, ids=[f"{c[0]}-{c[2]}" for c in INFERRED]
)
def test_infer_template_from_model_type(tmp_path: Path, model_type, file, expected):
    """A model folder as the hub has it: config.json's model_type, the tokenizer's special tokens
    and its official chat template in tokenizer_config.json (written as transformers writes it)."""
    from ftcore.data import infer_template

    jinja = (OFFICIAL / file).read_text()
    tokens = {
        str(i): {"content": tok, "special": True}
        for i, tok in enumerate(get_template(expected).special_tokens)
    }
    config = {"added_tokens_decoder": tokens, "chat_template": jinja}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert infer_template(tmp_path) == expected
