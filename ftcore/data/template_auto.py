"""`data.template: auto`: which of ftflow's templates a model was made for, and why.

Tried in order, the first answer wins: the built-in model's own template; the model catalogue entry
of model.name_or_path (a catalogue name or its hub repo id); config.json's model_type together with
the tokenizer files (templates.yaml's model_types / special_tokens / requires_text); last, the
tokenizer's own chat_template, rendered on probe conversations and compared with each template's text.
None of them: a ConfigError that says what was tried, before any tokenizing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcore.data.template import get_template, infer_template, list_templates
from ftcore.errors import ConfigError

_PROBE = [
    {"role": "user", "content": "Add the two numbers.\n12 + 7"},
    {"role": "assistant", "content": "19"},
    {"role": "user", "content": "And 3 + 4?"},
    {"role": "assistant", "content": "7"},
]
_PROBE_SYSTEM = "You answer in one line."
# Llama 3.2's template writes today's date unless told one; ftflow's templates fix the official default.
_RENDER_ARGS = {"date_string": "26 Jul 2024"}


@dataclass(frozen=True)
class TemplateChoice:
    """The picked template and a sentence saying why (logged, and shown by `ft template show`)."""

    name: str
    reason: str


def _catalogue(ref: str | None) -> TemplateChoice | None:
    if not ref:
        return None
    from ftcore.catalog import find_model, load_catalog

    entry = find_model(ref)
    if entry is None:  # a hub repo id of a catalogue model
        entry = next((m for m in load_catalog().values() if ref in (m.hf, m.ms)), None)
    if entry is None or not entry.template or entry.template not in list_templates():
        return None
    return TemplateChoice(entry.template, f"the model catalogue entry '{entry.name}' names it")


def _render(tokenizer: Any, jinja: str, messages: list[dict[str, str]]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, chat_template=jinja, **_RENDER_ARGS)
    except Exception:  # an official template may refuse a system turn or a role order
        return None


def _same_text(template_name: str, tokenizer: Any, jinja: str) -> bool:
    """Whether the tokenizer's chat_template writes what the template writes, with and without a
    system prompt (a template that refuses a system turn is compared without)."""
    template = get_template(template_name)
    compared = 0
    for system in (None, _PROBE_SYSTEM):
        messages = ([{"role": "system", "content": system}] if system else []) + _PROBE
        theirs = _render(tokenizer, jinja, messages)
        if theirs is None and system is not None:
            continue
        ours = "".join(p + r for p, r in template.render(tokenizer, _PROBE, system))
        if theirs != ours:
            return False
        compared += 1
    return compared > 0


def from_chat_template(model_dir: Path) -> TemplateChoice | None:
    """The first template (verified ones first, by name) whose text the tokenizer's own chat_template
    renders, with and without a system prompt."""
    from ftcore.modeling import load_tokenizer

    try:
        tokenizer = load_tokenizer(model_dir)
    except Exception:  # no usable tokenizer: nothing to compare with
        return None
    jinja = getattr(tokenizer, "chat_template", None)
    if not isinstance(jinja, str) or not jinja:
        return None
    # verified templates first: an unverified one with the same text (gemma / gemma3) is the less sure
    for name in sorted(list_templates(), key=lambda n: get_template(n).verified_by is None):
        if _same_text(name, tokenizer, jinja):
            return TemplateChoice(
                name, f"the tokenizer's own chat_template renders exactly what '{name}' does"
            )
    return None


def auto_template(model_dir: str | Path, model_ref: str | None = None) -> TemplateChoice:
    """The template for the model in `model_dir` (see the module docstring); `model_ref` is
    model.name_or_path, for the catalogue."""
    model_dir = Path(model_dir)
    marker = model_dir / "ftflow_builtin.json"
    if marker.is_file():
        built = json.loads(marker.read_text())
        if built.get("template"):
            return TemplateChoice(built["template"], f"built-in model '{built.get('name')}' ships it")
    found = _catalogue(model_ref)
    if found is not None:
        return found
    name = infer_template(model_dir)
    if name is not None:
        config = json.loads((model_dir / "config.json").read_text())
        return TemplateChoice(
            name,
            f"config.json model_type '{config.get('model_type')}' and the tokenizer files hold "
            f"'{name}''s special tokens",
        )
    found = from_chat_template(model_dir)
    if found is not None:
        return found
    raise ConfigError(
        f"data.template: auto found no template for model '{model_ref or model_dir}': it is not in the "
        "model catalogue, its config.json model_type and tokenizer files match no template, and its "
        "tokenizer's chat_template (if any) renders like none of ftflow's; set data.template to one "
        f"of: {', '.join(list_templates())} (`ft template list`)"
    )
