"""Chat templates: the data in templates/*.yaml plus the code that encodes with it.

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
from ftcore.data.thinking import Thinking
from ftcore.data.tools import TOOL_FORMATS, ToolFormat, call_ids
from ftcore.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TEMPLATES_DIR = Path(__file__).parent / "templates"  # every *.yaml in it, read in name order
TEMPLATES_FILE = TEMPLATES_DIR / "templates.yaml"  # the one whose header documents the format
_BUILTIN_MARKER = "ftflow_builtin.json"  # ftcore.builtin.BUILTIN_MARKER; not imported to stay light
_TOKENIZER_FILES = ("tokenizer_config.json", "chat_template.jinja", "tokenizer.json")


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
    format_observation: str | None = None
    format_function: str | None = None
    tool_format: str | None = None
    text_eos: str | None = None
    system_in_user: bool = False
    efficient_eos: str | None = None
    system_in_last_user: bool = False
    trim_reply: bool = False
    family: str | None = None
    verified_by: str | None = None

    def definition(self) -> dict[str, Any]:
        """Everything that decides encoded ids (not the name): what a tokenized-data cache key hashes.
        Switches added later count only when on, so older templates keep their keys."""
        keep = ("format_system", "format_user", "format_assistant", "bos", "default_system")
        keep += ("always_system", "trim_content", "thinking", "format_observation", "format_function")
        keep += ("tool_format", "text_eos")
        out = {k: v for k, v in dataclasses.asdict(self).items() if k in keep}
        switches = ("system_in_user", "efficient_eos", "system_in_last_user", "trim_reply")
        out.update({k: getattr(self, k) for k in switches if getattr(self, k)})
        if self.thinking is not None:  # likewise the later Thinking switches
            base = ("open", "close", "enabled", "trim_answer")
            defaults = Thinking("", "", False)
            out["thinking"] = {
                k: v
                for k, v in dataclasses.asdict(self.thinking).items()
                if k in base or v != getattr(defaults, k)
            }
        return out

    def tools(self) -> ToolFormat:
        """This family's tool format; rows with tools or function calls need one."""
        if self.tool_format is None:
            with_tools = ", ".join(n for n, t in _load_all().items() if t.tool_format)
            raise DataError(
                f"chat template '{self.name}' has no tool format, so rows with tools or function_call / "
                f"observation turns cannot be encoded with it; templates with one: {with_tools}"
            )
        return TOOL_FORMATS[self.tool_format]

    def _prompt_turn(self, message: dict[str, str], lead: str = "", ids: list[str] | None = None) -> str:
        """A user turn, or a tool result (observation, tied to the `ids` of the calls it answers),
        each followed by the assistant header; `lead` (the system block of a system_in_user
        template) goes before the content of the user turn that carries it."""
        if message["role"] == "observation":
            content = self.tools().render_results(message["content"], ids or [])
            return self._fill(self.format_observation or self.format_user, content, lead)
        content = message["content"]
        t = self.thinking
        if t is not None and not t.enabled and t.off_suffix and not content.endswith(t.off_suffix):
            content += t.off_suffix
        return self._fill(self.format_user, content, lead)

    def _response_turn(
        self,
        role: str,
        content: str,
        reasoning: str | None = None,
        ids: list[str] | None = None,
        block_in_prompt: bool = False,
    ) -> str:
        """An assistant reply; a function_call turn is written as the family's tool-call text.
        With `reasoning` (thinking on, last turn), the reasoning block comes first; keep_empty
        templates write the empty block where no reasoning is kept."""
        pattern = self.format_assistant
        if role == "function":
            pattern = self.format_function or self.format_assistant
            content = self.tools().render_calls(content, ids or [])
        elif self.trim_reply:
            content = content.strip()
        t = self.thinking
        if t is not None and reasoning is not None and not (t.write_empty or reasoning.strip()):
            reasoning = None  # nothing to think about, nothing written (Seed-OSS)
        if t is not None and not block_in_prompt and (reasoning is not None or t.keep_empty):
            kept = (reasoning or "").strip() if self.trim_reply else (reasoning or "").strip("\n")
            answer = content.lstrip("\n")
            content = t.open + kept + t.close + (t.sep + answer if answer else "")
        elif t is not None and block_in_prompt and t.sep and content:
            content = t.sep + content.lstrip("\n")
        return self._fill(pattern, content)

    def _fill(self, pattern: str, content: str, lead: str = "") -> str:
        # str.replace, not str.format: contents may hold braces.
        return pattern.replace("{content}", lead + (content.strip() if self.trim_content else content))

    def _system_turn(self, system: str | None, tools: str | None) -> str:
        """The filled system turn; no (or an empty) system prompt means the template's default, as
        in LLaMA-Factory (datasets often write "system": "" for none). Tools are described in the
        system turn, in the family's own words."""
        system = system or self.default_system
        if tools and not self.tools().listing:  # else the list is a block of its own (_listing)
            system = self.tools().system(system or "", tools)
        if not (system or self.always_system):
            return ""
        if self.system_in_user:  # untrimmed, like Gemma 3's and Llama 2's first_user_prefix
            return self.format_system.replace("{content}", system or "")
        return self._fill(self.format_system, system or "")

    def _prefix(self, system: str | None, tools: str | None = None) -> str:
        """bos plus the system turn (unless it goes inside the first user turn)."""
        turn = "" if self.system_in_user else self._system_turn(system, tools)
        return (self.bos or "") + turn

    def _lead(self, system: str | None, tools: str | None) -> str:
        """system_in_user (Llama 2, Gemma, Mistral): the system block that opens the first (with
        system_in_last_user: the last) user turn's content, as the official templates write it."""
        return self._system_turn(system, tools) if self.system_in_user else ""

    def _listing(self, tools: str | None) -> str:
        """The tool list of a family that writes it as a block of its own before the last user turn
        (Mistral v3), else nothing (the list is in the system turn)."""
        return self.tools().listing(tools) if tools and self.tools().listing else ""

    def _block_turn(self, messages: list[dict[str, str]]) -> int:
        """Index of the user turn that carries the system block (system_in_user) and a tool listing:
        the first turn, or with system_in_last_user the last user turn (Mistral v3)."""
        if not self.system_in_last_user:
            return 0
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        return users[-1] if users else 0

    def bind(self, tokenizer: PreTrainedTokenizerBase) -> Template:
        """This template with {bos_token} / {eos_token} replaced by the tokenizer's (generic
        templates such as alpaca or default write the model's own eos)."""
        fields = ("bos", "format_system", "format_user", "format_assistant")
        fields += ("format_observation", "format_function", "efficient_eos")
        if not any("_token}" in (getattr(self, f) or "") for f in fields):
            return self
        values = {"{bos_token}": tokenizer.bos_token or "", "{eos_token}": tokenizer.eos_token or ""}
        changes = {}
        for name in fields:
            text = getattr(self, name)
            if text:
                for key, value in values.items():
                    text = text.replace(key, value)
                changes[name] = text
        return dataclasses.replace(self, **changes)

    def _segments(
        self, messages: list[dict[str, str]], system: str | None, final_answer: bool, tools: str | None = None
    ) -> list[tuple[str, str]]:
        """(prompt text, response text) per turn. With `final_answer`, the last turn is the one the
        official templates treat specially: its reasoning is kept (thinking on) or replaced by an
        empty block in the prompt (thinking off); earlier turns always lose their reasoning."""
        pairs = self._turns(messages, system, final_answer, tools)
        if final_answer and self.efficient_eos and pairs:  # one end token, after the last reply only
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + self.efficient_eos)
        return pairs

    def _turns(
        self, messages: list[dict[str, str]], system: str | None, final_answer: bool, tools: str | None
    ) -> list[tuple[str, str]]:
        pairs, ids, block = [], [], self._block_turn(messages)
        for i in range(0, len(messages), 2):
            prompt = (self._prefix(system, tools) if i == 0 else "") + (
                self._listing(tools) if i == block else ""
            )
            prompt += self._prompt_turn(messages[i], self._lead(system, tools) if i == block else "", ids)
            role, content = messages[i + 1]["role"], messages[i + 1]["content"]
            if role == "function" and (self.tools().id_calls or self.tools().results):
                ids = call_ids(content, i + 1)
            if self.thinking is None:
                pairs.append((prompt, self._response_turn(role, content, ids=ids)))
                continue
            reasoning, answer = self.thinking.split(content)
            last = final_answer and i + 2 == len(messages)
            if last and not self.thinking.enabled:
                prompt += self.thinking.empty
            keep = reasoning if last and self.thinking.enabled else None
            off = last and not self.thinking.enabled  # the empty block went into the prompt
            pairs.append((prompt, self._response_turn(role, answer, keep, ids, block_in_prompt=off)))
        return pairs

    def encode_multiturn(
        self,
        tokenizer: PreTrainedTokenizerBase,
        messages: list[dict[str, str]],
        system: str | None = None,
        tools: str | None = None,
    ) -> list[tuple[list[int], list[int]]]:
        """(prompt ids, response ids) per turn (user or observation, then assistant or function
        call); the first prompt carries bos + system (+ the tool list) and the last response ends
        with efficient_eos when the template has one."""
        _check_roles(messages, final=RESPONSE_ROLES)
        bound = self.bind(tokenizer)
        pairs = [
            (_encode(tokenizer, prompt), _encode(tokenizer, response))
            for prompt, response in bound._segments(messages, system, final_answer=True, tools=tools)
        ]
        return pairs

    def render(
        self,
        tokenizer: PreTrainedTokenizerBase,
        messages: list[dict[str, str]],
        system: str | None = None,
        tools: str | None = None,
    ) -> list[tuple[str, str]]:
        """(prompt text, response text) per turn: what encode_multiturn tokenizes, for showing a
        user exactly what is trained."""
        _check_roles(messages, final=RESPONSE_ROLES)
        return self.bind(tokenizer)._segments(messages, system, final_answer=True, tools=tools)

    def encode_oneturn(
        self,
        tokenizer: PreTrainedTokenizerBase,
        messages: list[dict[str, str]],
        system: str | None = None,
        tools: str | None = None,
    ) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) where the prompt is everything before the last reply."""
        pairs = self.encode_multiturn(tokenizer, messages, system, tools)
        prompt = [i for source, target in pairs[:-1] for i in source + target] + pairs[-1][0]
        return prompt, pairs[-1][1]

    def encode_prompt(
        self,
        tokenizer: PreTrainedTokenizerBase,
        messages: list[dict[str, str]],
        system: str | None = None,
        tools: str | None = None,
    ) -> list[int]:
        """History + the final user (or observation) turn + the generation prompt: the input for
        generating a reply."""
        _check_roles(messages, final=PROMPT_ROLES)
        # the conversation plus an empty reply: its prompts are what the model sees (history
        # reasoning dropped, thinking off's empty block, the system block in its turn)
        reply = [{"role": "assistant", "content": ""}]
        *history, (last, _) = self.bind(tokenizer)._turns(messages + reply, system, True, tools)
        ids = [
            i
            for prompt, response in history
            for i in _encode(tokenizer, prompt) + _encode(tokenizer, response)
        ]
        return ids + _encode(tokenizer, last)

    def stop_token_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """Token ids that end generation: the tokenizer's eos, the template's stop words and its
        efficient_eos."""
        self.check_tokenizer(tokenizer)
        ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        eos = self.bind(tokenizer).efficient_eos  # "{eos_token}" means the tokenizer's own
        words = self.stop_words + ([eos] if eos else [])
        ids += [tokenizer.convert_tokens_to_ids(word) for word in words]
        return list(dict.fromkeys(ids))

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Every special token of the template must be one token of `tokenizer`, or training would
        learn the pieces of, e.g., '<|eot_id|>' spelled out in another family's vocabulary."""
        missing = [
            tok
            for tok in dict.fromkeys(self.special_tokens + self.stop_words + [self.efficient_eos or ""])
            if tok and tok != "{eos_token}" and not _single(tokenizer, tok)
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


PROMPT_ROLES = ("user", "observation")
RESPONSE_ROLES = ("assistant", "function")


def _check_roles(messages: list[dict[str, str]], final: tuple[str, ...]) -> None:
    """Turns must alternate user|observation, assistant|function, ... and end on a `final` role."""
    roles = [m.get("role") for m in messages]
    sides = [PROMPT_ROLES if i % 2 == 0 else RESPONSE_ROLES for i in range(len(roles))]
    if (
        not roles
        or any(r not in side for r, side in zip(roles, sides, strict=True))
        or roles[-1] not in final
    ):
        raise DataError(
            "messages must alternate user (or observation) / assistant (or function) and end with "
            f"{' or '.join(final)}; got roles {roles}"
        )


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


def _template(name: str, entry: dict[str, Any], source: Path) -> Template:
    thinking = entry.pop("thinking", None)
    template = Template(name=name, thinking=Thinking(**thinking) if thinking else None, **entry)
    patterns = (template.format_system, template.format_user, template.format_assistant)
    patterns += tuple(p for p in (template.format_observation, template.format_function) if p)
    if template.tool_format is not None and template.tool_format not in TOOL_FORMATS:
        raise ConfigError(f"{source}: template '{name}': unknown tool_format {template.tool_format!r}")
    for pattern in patterns:
        if pattern.count("{content}") != 1:
            raise ConfigError(f"{source}: template '{name}': {pattern!r} needs exactly one {{content}}")
    return template


@functools.cache
def _load_all() -> dict[str, Template]:
    """Every template of every *.yaml in TEMPLATES_DIR (name order); a name defined twice is an
    error naming both files, so no file silently replaces another's template."""
    templates: dict[str, Template] = {}
    origin: dict[str, Path] = {}
    for source in sorted(TEMPLATES_DIR.glob("*.yaml")):
        raw: dict[str, dict[str, Any]] = yaml.safe_load(source.read_text()) or {}
        for name, entry in raw.items():
            if name in origin:
                twice = f"in {origin[name]} and in {source}"
                raise ConfigError(f"chat template '{name}' is defined twice: {twice}")
            try:
                templates[name] = _template(name, dict(entry), source)
            except TypeError as exc:  # an unknown or missing key in the YAML
                raise ConfigError(f"{source}: template '{name}': {exc}") from exc
            origin[name] = source
    return templates


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
    """The default template of a local model: the built-in marker, else the first template (files by
    name, then file order) whose model_types hold config.json's model_type and whose special tokens
    and required text all appear in the tokenizer files (Qwen2.5's system prompt tells `qwen` from
    `qwen2`)."""
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
