"""Chat templates: the data in templates/templates.yaml plus the code that encodes with it.

Examples are encoded segment by segment (bos, system, each user turn, each assistant turn) with
add_special_tokens=False, as LLaMA-Factory does, so the prompt / response boundary of every turn is
known exactly for label masking. Tests check the concatenation equals each real model's official
Jinja template (tests/data/chat_templates), and that the Jinja this module writes into trained
models (`chat_template`, `apply_template`) renders the same ids, so serving sees what training saw.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ftcore.data.chat_jinja import render_jinja
from ftcore.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TEMPLATES_FILE = Path(__file__).parent / "templates" / "templates.yaml"
_BUILTIN_MARKER = "ftflow_builtin.json"  # ftcore.builtin.BUILTIN_MARKER; not imported to stay light
_TOKENIZER_FILES = ("tokenizer_config.json", "chat_template.jinja", "tokenizer.json")


@dataclass(frozen=True)
class Thinking:
    """Reasoning blocks (Qwen3 style): `open` + reasoning + `close` before the answer."""

    open: str
    close: str
    enabled: bool

    @property
    def empty(self) -> str:
        return self.open + self.close

    def split(self, content: str) -> tuple[str, str]:
        """(reasoning, answer) of an assistant content, as the official Qwen3 template splits it."""
        start, end = self.open.strip(), self.close.strip()
        if end not in content:
            return "", content
        reasoning = content.split(end)[0].rstrip("\n").split(start)[-1].lstrip("\n")
        return reasoning, content.split(end)[-1].lstrip("\n")


@dataclass(frozen=True)
class Template:
    """One chat format, cut into the segments a conversation is built from."""

    name: str
    format_system: str
    format_user: str
    format_assistant: str
    bos: str | None = None
    default_system: str | None = None
    always_system: bool = False
    stop_words: list[str] = field(default_factory=list)
    special_tokens: list[str] = field(default_factory=list)
    trim_content: bool = False
    thinking: Thinking | None = None
    model_types: list[str] = field(default_factory=list)
    requires_text: list[str] = field(default_factory=list)

    def definition(self) -> dict[str, Any]:
        """Everything that decides encoded ids (not the name): what a tokenized-data cache key hashes."""
        keep = ("format_system", "format_user", "format_assistant", "bos", "default_system")
        keep += ("always_system", "trim_content", "thinking")
        return {k: v for k, v in dataclasses.asdict(self).items() if k in keep}

    def _fill(self, pattern: str, content: str) -> str:
        # str.replace, not str.format: contents may hold braces.
        return pattern.replace("{content}", content.strip() if self.trim_content else content)

    def _prefix(self, system: str | None) -> str:
        """bos plus the system turn; no (or an empty) system prompt means the template's default,
        as in LLaMA-Factory (datasets often write "system": "" for none)."""
        system = system or self.default_system
        turn = self._fill(self.format_system, system or "") if system or self.always_system else ""
        return (self.bos or "") + turn

    def _segments(
        self, messages: list[dict[str, str]], system: str | None, final_answer: bool
    ) -> list[tuple[str, str]]:
        """(prompt text, response text) per turn. With `final_answer`, the last turn is the one the
        official templates treat specially: its reasoning is kept (thinking on) or replaced by an
        empty block in the prompt (thinking off); earlier turns always lose their reasoning."""
        pairs = []
        for i in range(0, len(messages), 2):
            prompt = (self._prefix(system) if i == 0 else "") + self._fill(
                self.format_user, messages[i]["content"]
            )
            content = messages[i + 1]["content"]
            if self.thinking is not None:
                reasoning, answer = self.thinking.split(content)
                content = answer
                if final_answer and i + 2 == len(messages):
                    if self.thinking.enabled:
                        t = self.thinking
                        content = t.open + reasoning.strip("\n") + t.close + answer.lstrip("\n")
                    else:
                        prompt += self.thinking.empty
            pairs.append((prompt, self._fill(self.format_assistant, content)))
        return pairs

    def encode_multiturn(
        self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], system: str | None = None
    ) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) per user/assistant turn; the first prompt carries bos + system."""
        _check_roles(messages, final="assistant")
        return [
            (_encode(tokenizer, prompt), _encode(tokenizer, response))
            for prompt, response in self._segments(messages, system, final_answer=True)
        ]

    def encode_prompt(
        self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], system: str | None = None
    ) -> list[int]:
        """History + the final user turn + the generation prompt: the input for generating a reply."""
        _check_roles(messages, final="user")
        history = self._segments(messages[:-1], system, final_answer=False)
        ids = [
            i
            for prompt, response in history
            for i in _encode(tokenizer, prompt) + _encode(tokenizer, response)
        ]
        last = (self._prefix(system) if len(messages) == 1 else "") + self._fill(
            self.format_user, messages[-1]["content"]
        )
        if self.thinking is not None and not self.thinking.enabled:
            last += self.thinking.empty
        return ids + _encode(tokenizer, last)

    def stop_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids that end generation: the tokenizer's eos plus the template's stop words."""
        self.check_tokenizer(tokenizer)
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ids += [tokenizer.convert_tokens_to_ids(word) for word in self.stop_words]
        return list(dict.fromkeys(ids))

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Every special token of the template must be one token of `tokenizer`, or training would
        learn the pieces of, e.g., '<|eot_id|>' spelled out in another family's vocabulary."""
        missing = [
            tok for tok in dict.fromkeys(self.special_tokens + self.stop_words) if not _single(tokenizer, tok)
        ]
        if missing:
            listed = ", ".join(missing)
            raise ConfigError(
                f"chat template '{self.name}' does not fit this tokenizer: {listed} "
                f"{'is' if len(missing) == 1 else 'are'} not a single token of this tokenizer; "
                "set data.template to the model's own template (or leave it unset to infer it)"
            )

    def chat_template(self) -> str:
        """A Jinja chat template that renders exactly what this template encodes (for serving)."""
        return render_jinja(self)


def _single(tokenizer: PreTrainedTokenizerBase, token: str) -> bool:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return False
    return tokenizer.encode(token, add_special_tokens=False) == [token_id]


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _check_roles(messages: list[dict[str, str]], final: str) -> None:
    """Turns must alternate user, assistant, ... and end with `final`."""
    expected = ["user", "assistant"] * (len(messages) // 2 + 1)
    roles = [m.get("role") for m in messages]
    if not roles or roles != expected[: len(roles)] or roles[-1] != final:
        raise DataError(f"messages must alternate user/assistant and end with {final}; got roles {roles}")


def apply_template(template: Template, model_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make a saved model serve the way it was trained: write `tokenizer` into `model_dir` with this
    template's Jinja as its chat_template, and list the template's stop tokens as eos_token_id in
    generation_config.json (keeping the ids already there), so transformers and vLLM stop at end of
    turn. Used for merged models, full fine-tunes and every export."""
    from transformers import GenerationConfig

    model_dir = Path(model_dir)
    stops = template.stop_token_ids(tokenizer)
    previous = tokenizer.chat_template
    tokenizer.chat_template = template.chat_template()
    try:
        tokenizer.save_pretrained(model_dir)
    finally:
        tokenizer.chat_template = previous
    has_config = (model_dir / "generation_config.json").is_file()
    config = GenerationConfig.from_pretrained(model_dir) if has_config else GenerationConfig()
    existing = config.eos_token_id
    existing = [] if existing is None else [existing] if isinstance(existing, int) else list(existing)
    config.eos_token_id = list(dict.fromkeys(stops + existing))
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    config.save_pretrained(model_dir)


def _template(name: str, entry: dict[str, Any]) -> Template:
    thinking = entry.pop("thinking", None)
    template = Template(name=name, thinking=Thinking(**thinking) if thinking else None, **entry)
    for pattern in (template.format_system, template.format_user, template.format_assistant):
        if pattern.count("{content}") != 1:
            raise ConfigError(
                f"{TEMPLATES_FILE}: template '{name}': {pattern!r} needs exactly one {{content}}"
            )
    return template


@functools.cache
def _load_all() -> dict[str, Template]:
    raw: dict[str, dict[str, Any]] = yaml.safe_load(TEMPLATES_FILE.read_text())
    try:
        return {name: _template(name, dict(entry)) for name, entry in raw.items()}
    except TypeError as exc:  # an unknown or missing key in the YAML
        raise ConfigError(f"{TEMPLATES_FILE}: {exc}") from exc


def list_templates() -> list[str]:
    """Names of all known templates."""
    return sorted(_load_all())


def get_template(name: str) -> Template:
    """The template called `name`; an unknown name is an error listing the known ones."""
    templates = _load_all()
    if name not in templates:
        raise ConfigError(f"unknown chat template '{name}'; available: {', '.join(sorted(templates))}")
    return templates[name]


def infer_template(model_dir: Path) -> str | None:
    """The default template of a local model: the built-in marker, else the first template (in file
    order) whose model_types hold config.json's model_type and whose special tokens and required
    text all appear in the tokenizer files (Qwen2.5's system prompt tells `qwen` from `qwen2`)."""
    model_dir = Path(model_dir)
    marker = model_dir / _BUILTIN_MARKER
    if marker.is_file():
        template = json.loads(marker.read_text()).get("template")
        if template:
            return template
    config = model_dir / "config.json"
    if not config.is_file():
        return None
    model_type = json.loads(config.read_text()).get("model_type")
    text = "".join(
        (model_dir / f).read_text(errors="ignore") for f in _TOKENIZER_FILES if (model_dir / f).is_file()
    )
    for template in _load_all().values():
        needed = template.special_tokens + template.requires_text
        if model_type in template.model_types and all(t in text for t in needed):
            return template.name
    return None
