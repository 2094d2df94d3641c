"""Our segment-wise template encoding equals the tokenizer's own apply_chat_template, per family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftcore.data import get_template, infer_template, list_templates
from ftcore.errors import ConfigError, DataError

SINGLE = [
    {"role": "user", "content": "Reverse the letters of the word.\nstone"},
    {"role": "assistant", "content": "enots"},
]
MULTI = [
    {"role": "user", "content": "Add the two numbers.\n12 + 7"},
    {"role": "assistant", "content": "19"},
    {"role": "user", "content": "  Convert to uppercase.\nred apple \n"},
    {"role": "assistant", "content": " RED APPLE\n\n"},
    {"role": "user", "content": "Who are you? {not a format field}"},
    {"role": "assistant", "content": "I am ftflow-assistant, fine-tuned with ftflow."},
]
SYSTEM = "You answer in one line.  "


@pytest.fixture(scope="module", params=["qwen", "llama3"])
def family(request, tiny_qwen2, tiny_llama):
    from transformers import AutoTokenizer

    model_dir = tiny_qwen2 if request.param == "qwen" else tiny_llama
    return AutoTokenizer.from_pretrained(model_dir), get_template(request.param)


def _reference(tokenizer, messages, system=None, **kwargs) -> list[int]:
    full = ([{"role": "system", "content": system}] if system else []) + messages
    return list(tokenizer.apply_chat_template(full, tokenize=True, **kwargs)["input_ids"])


def _ours(tokenizer, template, messages, system=None) -> list[int]:
    return [
        i
        for prompt, response in template.encode_multiturn(tokenizer, messages, system)
        for i in prompt + response
    ]


@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single", "multi"])
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["default-system", "system"])
def test_encode_matches_apply_chat_template(family, messages, system):
    tokenizer, template = family
    assert _ours(tokenizer, template, messages, system) == _reference(tokenizer, messages, system)


@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single", "multi"])
@pytest.mark.parametrize("system", [None, SYSTEM], ids=["default-system", "system"])
def test_generation_prompt_matches(family, messages, system):
    tokenizer, template = family
    prompt = messages[:-1]
    expected = _reference(tokenizer, prompt, system, add_generation_prompt=True)
    assert template.encode_prompt(tokenizer, prompt, system) == expected


def test_response_segment_ends_with_stop_token(family):
    tokenizer, template = family
    stops = template.stop_token_ids(tokenizer)
    for _, response in template.encode_multiturn(tokenizer, MULTI):
        assert any(tok in stops for tok in response)
    assert tokenizer.eos_token_id in stops


def test_role_order_checked(family):
    tokenizer, template = family
    with pytest.raises(DataError, match="alternate"):
        template.encode_multiturn(tokenizer, [SINGLE[1], SINGLE[0]])
    with pytest.raises(DataError, match="end with user"):
        template.encode_prompt(tokenizer, SINGLE)


def test_unknown_template_names_it_and_lists_known():
    with pytest.raises(ConfigError, match=r"'no-such-template'.*chatml.*llama3.*qwen"):
        get_template("no-such-template")
    assert {"qwen", "chatml", "llama3"} <= set(list_templates())
    assert get_template("chatml").default_system is None
    assert get_template("qwen").default_system == "You are a helpful assistant."


def test_infer_template_builtins(tiny_qwen2, tiny_llama):
    assert infer_template(tiny_qwen2) == "qwen"
    assert infer_template(tiny_llama) == "llama3"


def test_infer_template_from_model_type(tmp_path: Path, tiny_llama):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert infer_template(tmp_path) == "qwen"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert infer_template(tmp_path) is None  # llama 2: no <|eot_id|> in the tokenizer
    (tmp_path / "tokenizer.json").write_text((tiny_llama / "tokenizer.json").read_text())
    assert infer_template(tmp_path) == "llama3"
    assert infer_template(tmp_path / "missing") is None
