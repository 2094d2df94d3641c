"""Chat templates: the data in templates/templates.yaml plus the code that encodes with it.

Examples are encoded segment by segment (bos, system, each user turn, each assistant turn) with
add_special_tokens=False, as LLaMA-Factory does, so the prompt / response boundary of every turn is
known exactly for label masking. Tests check the concatenation equals the tokenizer's own
apply_chat_template for each family.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ftcore.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TEMPLATES_FILE = Path(__file__).parent / "templates" / "templates.yaml"
_BUILTIN_MARKER = "ftflow_builtin.json"  # ftcore.builtin.BUILTIN_MARKER; not imported to stay light


@dataclass(frozen=True)
class Template:
    """One chat format, cut into the segments a conversation is built from."""

    name: str
    format_system: str
    format_user: str
    format_assistant: str
    bos: str | None = None
    default_system: str | None = None
    stop_words: list[str] = field(default_factory=list)
    trim_content: bool = False
    model_types: list[str] = field(default_factory=list)
    requires_tokens: list[str] = field(default_factory=list)

    def _fill(self, pattern: str, content: str) -> str:
        # str.replace, not str.format: contents may hold braces.
        return pattern.replace("{content}", content.strip() if self.trim_content else content)

    def _prefix(self, system: str | None) -> str:
        """bos plus the system turn; `system=None` means the template's default."""
        system = self.default_system if system is None else system
        return (self.bos or "") + (self._fill(self.format_system, system) if system else "")

    def encode_multiturn(
        self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], system: str | None = None
    ) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) per user/assistant turn; the first prompt carries bos + system."""
        _check_roles(messages, final="assistant")
        prefix = _encode(tokenizer, self._prefix(system))
        pairs = []
        for i in range(0, len(messages), 2):
            prompt = _encode(tokenizer, self._fill(self.format_user, messages[i]["content"]))
            response = _encode(tokenizer, self._fill(self.format_assistant, messages[i + 1]["content"]))
            pairs.append(((prefix + prompt) if i == 0 else prompt, response))
        return pairs

    def encode_prompt(
        self, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], system: str | None = None
    ) -> list[int]:
        """History + the final user turn + the generation prompt: the input for generating a reply."""
        _check_roles(messages, final="user")
        ids = []
        if len(messages) > 1:
            for prompt, response in self.encode_multiturn(tokenizer, messages[:-1], system):
                ids += prompt + response
        else:
            ids = _encode(tokenizer, self._prefix(system))
        return ids + _encode(tokenizer, self._fill(self.format_user, messages[-1]["content"]))

    def stop_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids that end generation: the tokenizer's eos plus the template's stop words."""
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        for word in self.stop_words:
            token_id = tokenizer.convert_tokens_to_ids(word)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ConfigError(
                    f"template '{self.name}': stop word {word!r} is not a token of the tokenizer"
                )
            ids.append(token_id)
        return list(dict.fromkeys(ids))


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


def _check_roles(messages: list[dict[str, str]], final: str) -> None:
    """Turns must alternate user, assistant, ... and end with `final`."""
    expected = ["user", "assistant"] * (len(messages) // 2 + 1)
    roles = [m.get("role") for m in messages]
    if not roles or roles != expected[: len(roles)] or roles[-1] != final:
        raise DataError(f"messages must alternate user/assistant and end with {final}; got roles {roles}")


@functools.cache
def _load_all() -> dict[str, Template]:
    raw: dict[str, dict[str, Any]] = yaml.safe_load(TEMPLATES_FILE.read_text())
    try:
        return {name: Template(name=name, **entry) for name, entry in raw.items()}
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
    """The default template of a local model: the built-in marker, else config.json's model_type."""
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
    tokenizer_text = "".join(
        (model_dir / f).read_text(errors="ignore")
        for f in ("tokenizer_config.json", "tokenizer.json")
        if (model_dir / f).is_file()
    )
    for template in _load_all().values():
        if model_type in template.model_types and all(t in tokenizer_text for t in template.requires_tokens):
            return template.name
    return None
