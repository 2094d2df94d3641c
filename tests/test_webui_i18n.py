"""Chinese everywhere: every text the built board shows (tab, accordion title, button, label, field) has
its Chinese in webui/zh.yaml and is relabelled by the language switch; the vLLM chat backend is off,
saying how to install it, where its side env is missing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("gradio")

from webui import i18n
from webui.schema import fields

ZH = Path(__file__).resolve().parents[1] / "webui" / "zh.yaml"
TABLE = yaml.safe_load(ZH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory):
    """The board built (not launched) on a machine without vLLM's side env."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTFLOW_VLLM_PYTHON", str(tmp_path_factory.mktemp("novllm") / "bin" / "python"))
        mp.setenv("FTFLOW_BOARD_DIR", str(tmp_path_factory.mktemp("board")))
        from webui.app import build

        yield build()


def _shown(block: Any) -> str:
    """The text a block shows of its own: a button's caption, a markdown's text, a label or title."""
    import gradio as gr

    if isinstance(block, (gr.Button, gr.Markdown)):
        return str(block.value or "")
    hidden = getattr(block, "show_label", None) is False
    return "" if hidden else str(getattr(block, "label", None) or "")


def test_every_visible_text_has_its_chinese(board) -> None:
    form = board.ftflow_form
    by_field = {id(c): path for path, c in form.components.items()}
    by_key = {id(c): key.split("#", 1)[0] for key, (_attr, c) in form.texts.items()}
    untranslated = []
    for block in board.blocks.values():
        text = _shown(block)
        if not re.search(r"[^\W\d_]", text) or text in ("English", "中文"):  # a symbol (↻); the switch
            continue
        if id(block) in by_field:
            if by_field[id(block)] not in TABLE["fields"]:
                untranslated.append(f"field {by_field[id(block)]}")
        elif id(block) not in by_key:
            untranslated.append(f"{type(block).__name__} {text!r}: not relabelled by the language switch")
        elif by_key[id(block)] not in TABLE["ui"]:
            untranslated.append(f"{type(block).__name__} {text!r}: no ui.{by_key[id(block)]} in zh.yaml")
    assert not untranslated, "\n".join(untranslated)
    assert {s.path for s in fields()} == set(TABLE["fields"])  # every field, also those not rendered yet
    assert set(TABLE["ui"]) == set(i18n.UI_EN)
    # the switch relabels them all: the Chinese table's text, never the English
    updates = form.relabel("zh")
    texts = [u.get("label") or u.get("value") for u in updates]
    assert "LoRA 参数" in texts and "推理后端" in texts and "部署设置（ft serve）" in texts
    assert "LoRA" not in texts and "Backend" not in texts


def test_messages_are_translated_with_their_values() -> None:
    assert i18n.ui("not_running", "zh").format(name="j") == "j：未在运行"
    assert i18n.ui("not_running", "en").format(name="j") == "j: not running"
    assert i18n.ui("state.completed", "zh") == "已完成"
    assert i18n.ui("state.scheduled", "en") == "scheduled"  # a state without an entry shows its name
    assert i18n.lang_code("中文") == "zh" and i18n.lang_code("English") == "en"
    for key, english in i18n.UI_EN.items():  # the same {placeholders} in both languages
        assert sorted(_names(TABLE["ui"][key])) == sorted(_names(english)), key


def _names(text: str) -> list[str]:
    import string

    return [name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name]


def test_vllm_backend_is_off_with_the_reason_when_its_env_is_missing(board) -> None:
    from webui import chat

    radio = next(b for b in board.blocks.values() if getattr(b, "elem_id", None) == "chat-backend")
    assert radio.interactive is False and "ft env install vllm" in radio.info
    assert radio.value == "transformers"
    said = list(chat.load("any-job", "vLLM", "English"))
    assert "ft env install vllm" in said[-1] and not chat._loaded
