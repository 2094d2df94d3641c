"""`data.template: auto` (which template, and why) and `ft template list / show`."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from flows.cli import main
from ftcore.data.template import get_template
from ftcore.data.template_auto import auto_template
from ftcore.errors import ConfigError

ROOT = Path(__file__).parent.parent
OFFICIAL = ROOT / "tests" / "data" / "chat_templates"


def _model_dir(dst: Path, builtin: str, chat_template: str, model_type: str = "no_such_arch") -> Path:
    """A model folder as a hub download has it: config.json and the tokenizer of `builtin`, with
    `chat_template` as the tokenizer's own."""
    from ftcore.builtin import ensure_builtin

    src = ensure_builtin(builtin)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "config.json").write_text(json.dumps({"model_type": model_type}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (dst / name).write_text((src / name).read_text())
    (dst / "chat_template.jinja").write_text(chat_template)
    return dst


def test_auto_builtin_and_catalogue(tmp_path: Path) -> None:
    from ftcore.builtin import ensure_builtin

    choice = auto_template(ensure_builtin("tiny-qwen3"), "builtin:tiny-qwen3")
    assert choice.name == "qwen3" and "built-in model 'tiny-qwen3'" in choice.reason
    # a catalogue model, by its name or its hub repo id (the download itself holds no hint here)
    for ref in ("Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct"):
        choice = auto_template(tmp_path, ref)
        assert choice.name == "qwen" and "catalogue entry 'Qwen2.5-7B-Instruct'" in choice.reason


def test_auto_model_type_then_tokenizer_chat_template(tmp_path: Path) -> None:
    llama = _model_dir(
        tmp_path / "llama", "tiny-llama", (OFFICIAL / "llama3-instruct.jinja").read_text(), "llama"
    )
    choice = auto_template(llama)
    assert choice.name == "llama3" and "model_type 'llama'" in choice.reason
    # no model_type match: the tokenizer's own template is rendered and compared with every template
    cases = {
        "mistral_v0.2": ("tiny-mistral", "mistral-instruct-v0.2.jinja"),
        "gemma3": ("tiny-gemma2", "gemma3-it.jinja"),
        "qwen2": ("tiny-qwen2", "qwen2-instruct.jinja"),
    }
    for expected, (builtin, jinja) in cases.items():
        folder = _model_dir(tmp_path / expected, builtin, (OFFICIAL / jinja).read_text())
        choice = auto_template(folder, "someone/fine-tune")
        # gemma2 and gemma3 write the same text: either encodes this model's conversations alike
        assert get_template(choice.name).definition() == get_template(expected).definition(), choice
        assert "chat_template renders exactly" in choice.reason


def test_auto_phi_by_its_chat_template(tmp_path: Path) -> None:
    """Phi-3.5 shares model_type phi3 with Phi-4(-mini): only its own template tells it (eos at the end)."""
    from transformers import AutoTokenizer

    from ftcore.builtin import ensure_builtin

    tokenizer = AutoTokenizer.from_pretrained(ensure_builtin("tiny-llama"))
    tokens = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"]
    tokenizer.add_special_tokens({"additional_special_tokens": tokens, "eos_token": "<|endoftext|>"})
    tokenizer.chat_template = (OFFICIAL / "phi3.5-mini-instruct.jinja").read_text()
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "phi3"}))
    choice = auto_template(tmp_path, "someone/phi-3.5-tune")
    assert choice.name == "phi" and "chat_template" in choice.reason


def test_auto_refuses_clearly(tmp_path: Path) -> None:
    odd = "{% for m in messages %}<<{{ m['role'] }}>> {{ m['content'] }}\n{% endfor %}"
    folder = _model_dir(tmp_path / "odd", "tiny-qwen2", odd)
    with pytest.raises(
        ConfigError, match=r"auto found no template for model 'someone/odd'.*set data.template"
    ):
        auto_template(folder, "someone/odd")


def test_auto_in_the_pipeline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ftcore import steps
    from ftcore.steps.preprocess import resolve_template
    from tests.helpers import small_config

    cfg = small_config(tmp_path / "job", "train.report_to=none", "data.template=auto")
    assert cfg.data.template == "auto"
    model = steps.fetch_model(cfg)
    with caplog.at_level(logging.INFO, logger="ftcore"):
        assert resolve_template(cfg, model) == "qwen2"
    assert "data.template auto: 'qwen2', because built-in model 'tiny-qwen2' ships it" in caplog.text


def test_template_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["template", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^qwen3\s+qwen3\s+yes \(qwen3.jinja\)\s+qwen\s+on$", out, re.M)
    assert re.search(r"^vicuna\s+vicuna\s+no\s+-\s+-$", out, re.M)
    assert main(["template", "list", "--markdown"]) == 0
    table = capsys.readouterr().out
    assert (
        table.startswith("| template | family |")
        and "| `llama2` | llama2 | yes (llama2-chat.jinja) |" in table
    )


def test_readme_lists_every_template(capsys: pytest.CaptureFixture[str]) -> None:
    main(["template", "list", "--markdown"])
    table = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("<!-- templates:begin -->\n")[1].split("<!-- templates:end -->")[0]
    assert shown == table, "README's template table is stale: paste `ft template list --markdown` into it"


def test_template_show_marks_exactly_the_trained_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoTokenizer

    from ftcore.builtin import ensure_builtin

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Reverse: stone"},
        {"role": "assistant", "content": "enots"},
        {"role": "user", "content": "And: wolf"},
        {"role": "assistant", "content": "flow"},
    ]
    file = tmp_path / "chat.json"
    file.write_text(json.dumps(messages))
    assert main(["template", "show", "llama3", "--messages", str(file), "--no-color"]) == 0
    out = capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(ensure_builtin("tiny-llama"))
    pairs = get_template("llama3").encode_multiturn(tokenizer, messages[1:], "Be brief.")
    shown = re.findall(r"^turn \d response: \[\[([\d ]+)\]\]$", out, re.M)
    assert [list(map(int, ids.split())) for ids in shown] == [r for _, r in pairs]
    assert "[[enots<|eot_id|>]]" in out and "Be brief." in out and "builtin:tiny-llama" in out
    # a tokenizer without the template's tokens is refused, naming them
    assert main(["template", "show", "llama3", "--tokenizer", "builtin:tiny-qwen2"]) == 2
    assert "<|eot_id|>" in capsys.readouterr().err
