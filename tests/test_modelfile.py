"""The Ollama Modelfile renders the prompts the model was trained with (Go template vs our Jinja)."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ftcore.data.template import get_template
from ftcore.export.modelfile import go_template, write_modelfile
from tests.gotemplate import render

CONVERSATION = [
    {"role": "user", "content": "Reverse the word.\nstone"},
    {"role": "assistant", "content": "enots"},
    {"role": "user", "content": "And this one?\nlamp"},
    {"role": "assistant", "content": "pmal"},
]


def _jinja(template_name: str, messages: list[dict], add_generation_prompt: bool) -> str:
    """What the chat template ftflow writes into trained models renders (as transformers runs it)."""

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    source = get_template(template_name).chat_template()
    return env.from_string(source).render(messages=messages, add_generation_prompt=add_generation_prompt)


def _ollama(template_name: str, messages: list[dict]) -> str:
    """What Ollama renders: .System is the request's system message, else the Modelfile's SYSTEM;
    .Messages holds every message (system ones included) with Role / Content."""
    template = get_template(template_name)
    system = next((m["content"] for m in messages if m["role"] == "system"), template.default_system)
    data = {
        "System": system or "",
        "Messages": [{"Role": m["role"], "Content": m["content"], "Thinking": ""} for m in messages],
    }
    return render(go_template(template), data)


@pytest.mark.parametrize("name", ["qwen", "qwen2", "chatml", "llama3", "llama3.1", "qwen3", "qwen3_nothink"])
@pytest.mark.parametrize("system", [None, "Answer in one word."])
def test_modelfile_template_renders_like_the_trained_template(name: str, system: str | None) -> None:
    head = [{"role": "system", "content": system}] if system else []
    bos = get_template(name).bos or ""
    for messages, generation in ((CONVERSATION[:-1], True), (CONVERSATION, False), (CONVERSATION[:1], True)):
        expected = _jinja(name, head + messages, generation)
        assert expected.startswith(bos)
        # BOS is the runtime's to add (Ollama's tokenizer does, as for its own Llama 3 template)
        assert _ollama(name, head + messages) == expected[len(bos) :], (name, len(messages))


def test_modelfile_lists_system_prompt_and_stop_words(tmp_path: Path) -> None:
    path = write_modelfile(tmp_path, "qwen")
    text = path.read_text()
    lines = text.splitlines()
    assert path.name == "Modelfile" and "FROM ." in lines
    assert 'SYSTEM """You are Qwen, created by Alibaba Cloud. You are a helpful assistant."""' in lines
    assert 'PARAMETER stop "<|im_end|>"' in lines
    assert text.count('TEMPLATE """') == 1
    llama = write_modelfile(tmp_path, "llama3.1").read_text().splitlines()
    assert [line for line in llama if line.startswith("PARAMETER stop")] == [
        'PARAMETER stop "<|eot_id|>"',
        'PARAMETER stop "<|eom_id|>"',
    ]
    assert not any(line.startswith("SYSTEM") for line in llama), "llama3.1 has no default system prompt"


def test_renderer_is_not_vacuous() -> None:
    """The test renderer really evaluates branches: a wrong role or system changes the output."""
    template = go_template(get_template("qwen"))
    one = render(template, {"System": "", "Messages": [{"Role": "user", "Content": "hi"}]})
    other = render(template, {"System": "S", "Messages": [{"Role": "assistant", "Content": "hi"}]})
    assert one == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert other == "<|im_start|>system\nS<|im_end|>\nhi<|im_end|>\n"
