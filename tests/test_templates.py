"""Templates encode what the real models' OFFICIAL chat templates render (tests/data/chat_templates),
and the Jinja ftflow writes into trained models renders the same ids again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ftcore.data import get_template, infer_template, list_templates
from ftcore.errors import ConfigError, DataError
from tests.helpers import MULTI, REASONING, SINGLE, SYSTEM
from tests.test_templates_families3 import CHECKED as CHECKED_FAMILIES3  # checked there
from tests.test_templates_more import VERIFIED as VERIFIED_MORE  # checked there, on their own tokenizer
from tests.test_templates_tools import VERIFIED_HERE as VERIFIED_TOOLS  # mistral, glm4_moe: there

# Every template that names an official Jinja (verified_by) is checked here, on the tokenizer of its
# family: a built-in tiny model's, or tiny-llama's with the family's special tokens added (Phi-3,
# OpenChat: no built-in of their own). ministral, gemma2 and phi4 are checked on their built-ins in
# tests/test_builtin_families.py. name -> (tokenizer, whether the official template takes a system
# prompt that a training conversation keeps, extra apply_chat_template arguments)
VERIFIED = {
    "qwen": ("tiny-qwen2", True, {}),
    "qwen2": ("tiny-qwen2", True, {}),
    "qwen3": ("tiny-qwen3", True, {}),
    "llama3": ("tiny-llama", True, {}),
    "llama3.1": ("tiny-llama", True, {}),
    "llama3.2": ("tiny-llama", True, {"date_string": "26 Jul 2024"}),
    "llama3.3": ("tiny-llama", True, {}),
    "llama2": ("tiny-mistral", True, {}),  # <s>, </s>, [INST] as tokens
    "mistral_v0.1": ("tiny-mistral", False, {}),  # the official template raises on a system turn
    "mixtral": ("tiny-mistral", False, {}),
    "mistral_v0.2": ("tiny-mistral", True, {}),
    "gemma3": ("tiny-gemma2", True, {}),
    "phi": ("phi3", True, {}),
    "openchat": ("openchat", True, {}),
}
IN_BUILTIN_FAMILIES = {"ministral", "gemma2", "phi4"}
CHECKED_BELOW = {"qwen3_nothink"} | VERIFIED_TOOLS  # test_qwen3_thinking_on_and_off, test_templates_tools
ROOT = Path(__file__).parent.parent
CONVERSATIONS = {"single": SINGLE, "multi": MULTI}
# tiny-llama's tokenizer with a family's tokens added: (special tokens, eos)
ADDED = {
    "phi3": (["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"], "<|endoftext|>"),
    "openchat": (["<|end_of_turn|>"], "<|end_of_turn|>"),
}


def _added(base, tokens: list[str], eos: str):
    import copy

    tokenizer = copy.deepcopy(base)
    tokenizer.add_special_tokens({"additional_special_tokens": tokens, "eos_token": eos})
    return tokenizer


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    from ftcore.builtin import ensure_builtin

    loaded = {
        name: AutoTokenizer.from_pretrained(ensure_builtin(name))
        for name in ("tiny-qwen2", "tiny-qwen3", "tiny-llama", "tiny-mistral", "tiny-gemma2")
    }
    for name, (tokens, eos) in ADDED.items():
        loaded[name] = _added(loaded["tiny-llama"], tokens, eos)
    # every template's tokens at once (eos </s>): for templates checked against themselves
    every = {t for name in list_templates() for t in get_template(name).special_tokens}
    every |= {t for name in list_templates() for t in get_template(name).stop_words}
    loaded["all"] = _added(loaded["tiny-llama"], sorted(every | {"<s>", "</s>"}), "</s>")
    return loaded


def _render(tokenizer, jinja: str, messages, system=None, **kwargs) -> list[int]:
    full = ([{"role": "system", "content": system}] if system is not None else []) + messages
    out = tokenizer.apply_chat_template(full, tokenize=True, chat_template=jinja, **kwargs)
    return list(out["input_ids"])


def _official(name: str) -> str:
    return (ROOT / get_template(name).verified_by).read_text()


def _ours(tokenizer, template, messages, system=None) -> list[int]:
    return [
        i
        for prompt, response in template.encode_multiturn(tokenizer, messages, system)
        for i in prompt + response
    ]


@pytest.mark.parametrize("name", VERIFIED)
@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["default-system", "system"])
def test_encoding_matches_official_template(tokenizers, name, conversation, system):
    builtin, takes_system, kwargs = VERIFIED[name]
    if system is not None and not takes_system:
        pytest.skip(f"the official {name} template has no system turn")
    tokenizer, template = tokenizers[builtin], get_template(name)
    template.check_tokenizer(tokenizer)
    messages = CONVERSATIONS[conversation]
    official = _official(name)
    expected = _render(tokenizer, official, messages, system, **kwargs)
    assert _ours(tokenizer, template, messages, system) == expected
    prompt = messages[:-1]
    expected = _render(tokenizer, official, prompt, system, add_generation_prompt=True, **kwargs)
    assert template.encode_prompt(tokenizer, prompt, system) == expected


def test_every_verified_template_is_checked():
    """A template that claims an official Jinja is compared with it (here or on its built-in)."""
    verified = {n for n in list_templates() if get_template(n).verified_by}
    checked = set(VERIFIED) | IN_BUILTIN_FAMILIES | CHECKED_BELOW | set(VERIFIED_MORE)
    assert verified == checked | CHECKED_FAMILIES3
    for name in verified:
        assert (ROOT / get_template(name).verified_by).is_file(), name
    assert len(list_templates()) >= 30


def test_qwen3_thinking_on_and_off(tokenizers):
    tokenizer, official = tokenizers["tiny-qwen3"], _official("qwen3")
    think, nothink = get_template("qwen3"), get_template("qwen3_nothink")
    # history turns lose their reasoning, the last turn keeps it (or gets an empty block)
    assert _ours(tokenizer, think, REASONING) == _render(tokenizer, official, REASONING)
    text = tokenizer.decode(_ours(tokenizer, think, REASONING))
    assert "12 plus 7" not in text and "three and four" in text
    assert text.count("<think>") == 1
    for messages in (SINGLE, MULTI):
        assert _ours(tokenizer, think, messages) == _render(tokenizer, official, messages)
        assert _ours(tokenizer, nothink, messages) == _render(tokenizer, official, messages)
        prompt = messages[:-1]
        for template, enabled in ((think, True), (nothink, False)):
            expected = _render(
                tokenizer, official, prompt, add_generation_prompt=True, enable_thinking=enabled
            )
            assert template.encode_prompt(tokenizer, prompt) == expected
        assert think.encode_prompt(tokenizer, prompt) != nothink.encode_prompt(tokenizer, prompt)
    # thinking on: the empty block is part of the trained response; off: of the untrained prompt
    ((on_prompt, on_response),) = think.encode_multiturn(tokenizer, SINGLE)
    ((off_prompt, off_response),) = nothink.encode_multiturn(tokenizer, SINGLE)
    assert on_prompt + on_response == off_prompt + off_response
    assert len(off_prompt) > len(on_prompt)
    assert tokenizer.convert_tokens_to_ids("<think>") in on_response


# more.yaml's templates are checked the same way in test_templates_more.py, on a tokenizer with their tokens
MORE = set(yaml.safe_load((ROOT / "ftcore/data/templates/more.yaml").read_text()))


@pytest.mark.parametrize("name", sorted(set(list_templates()) - MORE))
def test_our_jinja_renders_our_ids(tokenizers, name):
    """The chat_template written into trained models renders exactly what training encoded."""
    template = get_template(name)
    tokenizer = tokenizers["all"]
    jinja = template.chat_template()
    for messages in (SINGLE, MULTI, REASONING):
        for system in (None, SYSTEM):
            text = "".join(p + r for p, r in template.render(tokenizer, messages, system))
            full = ([{"role": "system", "content": system}] if system else []) + messages
            rendered = tokenizer.apply_chat_template(full, tokenize=False, chat_template=jinja)
            assert rendered == text  # efficient_eos included
            if name == "empty":  # no separators: words of adjacent turns merge into other tokens
                continue
            assert _ours(tokenizer, template, messages, system) == _render(tokenizer, jinja, messages, system)
            prompt = messages[:-1]
            rendered = _render(tokenizer, jinja, prompt, system, add_generation_prompt=True)
            assert template.encode_prompt(tokenizer, prompt, system) == rendered


def test_empty_system_means_the_default(tokenizers):
    tokenizer, template = tokenizers["tiny-qwen2"], get_template("qwen")
    default = _ours(tokenizer, template, SINGLE)
    assert _ours(tokenizer, template, SINGLE, "") == default
    assert "You are Qwen" in tokenizer.decode(default)
    assert _render(tokenizer, template.chat_template(), SINGLE, "") == default


def test_jinja_thinking_switch_at_serving(tokenizers):
    tokenizer, jinja = tokenizers["tiny-qwen3"], get_template("qwen3").chat_template()
    prompt = SINGLE[:1]
    off = _render(tokenizer, jinja, prompt, add_generation_prompt=True, enable_thinking=False)
    assert off == get_template("qwen3_nothink").encode_prompt(tokenizer, prompt)


def test_default_system_prompts_match_the_real_models():
    assert (
        get_template("qwen").default_system
        == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    )
    assert get_template("qwen2").default_system == "You are a helpful assistant."
    assert get_template("qwen3").default_system is None
    assert get_template("chatml").default_system is None


def test_definition_holds_what_changes_ids():
    qwen, qwen2, chatml = get_template("qwen"), get_template("qwen2"), get_template("chatml")
    assert qwen.definition() != qwen2.definition()  # default system prompts differ
    assert get_template("qwen3").definition() != get_template("qwen3_nothink").definition()
    assert "name" not in chatml.definition() and "model_types" not in chatml.definition()
    json.dumps(qwen.definition())  # hashable as JSON


def test_template_special_tokens_must_be_tokens(tokenizers):
    qwen2_tokenizer = tokenizers["tiny-qwen2"]
    with pytest.raises(ConfigError, match=r"'llama3'.*<\|begin_of_text\|>.*<\|eot_id\|>.*not a single token"):
        get_template("llama3").check_tokenizer(qwen2_tokenizer)
    with pytest.raises(ConfigError, match=r"'qwen3'.*<think>, </think> are not a single token"):
        get_template("qwen3").check_tokenizer(qwen2_tokenizer)
    get_template("qwen2").check_tokenizer(qwen2_tokenizer)
    get_template("llama3.1").check_tokenizer(tokenizers["tiny-llama"])


def test_preprocess_refuses_a_template_of_another_family(tmp_path: Path) -> None:
    from ftcore import steps
    from tests.helpers import small_config

    cfg = small_config(tmp_path / "job", "train.report_to=none", "data.template=llama3")
    model = steps.fetch_model(cfg)
    with pytest.raises(ConfigError, match=r"<\|eot_id\|>"):
        steps.preprocess(cfg, model, steps.fetch_dataset(cfg))


def test_response_segment_ends_with_stop_token(tokenizers):
    for name, (builtin, _, _) in VERIFIED.items():
        tokenizer, template = tokenizers[builtin], get_template(name)
        stops = template.stop_token_ids(tokenizer)
        for _, response in template.encode_multiturn(tokenizer, MULTI):
            assert response[-1] in stops or response[-2] in stops
        assert tokenizer.eos_token_id in stops


def test_role_order_checked(tokenizers):
    tokenizer, template = tokenizers["tiny-qwen2"], get_template("qwen2")
    with pytest.raises(DataError, match="alternate"):
        template.encode_multiturn(tokenizer, [SINGLE[1], SINGLE[0]])
    with pytest.raises(DataError, match="end with user"):
        template.encode_prompt(tokenizer, SINGLE)


def test_unknown_template_names_it_and_lists_known():
    with pytest.raises(ConfigError, match=r"'no-such-template'.*chatml.*llama3.*qwen"):
        get_template("no-such-template")
    assert {"qwen", "qwen2", "qwen3", "qwen3_nothink", "chatml", "llama3", "llama3.1"} <= set(
        list_templates()
    )


def test_infer_template_builtins(tokenizers):
    from ftcore.builtin import ensure_builtin

    assert infer_template(ensure_builtin("tiny-qwen2")) == "qwen2"
    assert infer_template(ensure_builtin("tiny-qwen3")) == "qwen3"
    assert infer_template(ensure_builtin("tiny-llama")) == "llama3"


def _tokenizer_files(dst: Path, src: Path, chat_template: str | None = None) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (dst / name).write_text((src / name).read_text())
    (dst / "chat_template.jinja").write_text(chat_template or "")


def test_infer_template_from_model_type(tmp_path: Path):
    from ftcore.builtin import ensure_builtin

    qwen_dir, llama_dir = ensure_builtin("tiny-qwen2"), ensure_builtin("tiny-llama")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    _tokenizer_files(tmp_path, qwen_dir, _official("qwen2"))
    assert infer_template(tmp_path) == "qwen2"
    _tokenizer_files(tmp_path, qwen_dir, _official("qwen"))
    assert infer_template(tmp_path) == "qwen"  # Qwen2.5: same model_type, its own system prompt
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (tmp_path / name).unlink()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert infer_template(tmp_path) is None  # llama 2: no <|eot_id|> in the tokenizer
    _tokenizer_files(tmp_path, llama_dir, _official("llama3"))
    assert infer_template(tmp_path) == "llama3"
    _tokenizer_files(tmp_path, llama_dir, _official("llama3.1"))
    assert infer_template(tmp_path) == "llama3.1"
    assert infer_template(tmp_path / "missing") is None


# Templates without an official Jinja: their exact text, as LLaMA-Factory writes them.
TEXTS = {
    "alpaca": "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nhi\n\n### Response:\nho</s>\n\n",
    "vicuna": "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions.USER: hi ASSISTANT:ho</s>",
    "default": "Human: hi</s>\nAssistant:ho</s>\n",
    "empty": "hiho",
}


@pytest.mark.parametrize("name", TEXTS)
def test_unverified_template_text(tokenizers, name):
    template = get_template(name)
    assert template.verified_by is None
    text = "".join(
        p + r
        for p, r in template.render(
            tokenizers["all"], [SINGLE[0] | {"content": "hi"}, SINGLE[1] | {"content": "ho"}]
        )
    )
    assert text == TEXTS[name]


def test_system_in_user_and_generic_eos(tokenizers):
    """Llama 2 / Gemma put the system block inside the first user turn; {eos_token} is the model's."""
    tokenizer = tokenizers["tiny-mistral"]
    ((prompt, response),) = get_template("llama2").render(tokenizer, SINGLE, "Be brief.")
    assert (
        prompt.startswith("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nReverse") and response == " enots </s>"
    )
    ((prompt, _),) = get_template("gemma3").render(tokenizer, SINGLE, "Be brief.")
    assert prompt.startswith("<bos><start_of_turn>user\nBe brief.\n\nReverse")
    ((_, response),) = get_template("alpaca").render(tokenizers["phi3"], SINGLE)
    assert response == "enots<|endoftext|>\n\n"
    # efficient_eos: one eos after the last reply, trained
    pairs = get_template("phi").encode_multiturn(tokenizers["phi3"], MULTI)
    eos = tokenizers["phi3"].eos_token_id
    assert pairs[-1][1][-1] == eos and all(eos not in r for _, r in pairs[:-1])
