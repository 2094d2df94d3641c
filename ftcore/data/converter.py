"""One raw record of a LLaMA-Factory dataset (alpaca, sharegpt or openai) -> one normalized row, validated.

A normalized row is::

    {"messages": [{"role": "user" | "assistant" | "function" | "observation", "content": str}, ...],
     "system": str | None, "tools": str | None,
     "chosen": {"role", "content"} | None, "rejected": {"role", "content"} | None,
     "kto_tag": bool | None}

Turns alternate prompt side (user, observation) and response side (assistant, function), as in
LLaMA-Factory's converter. `messages` ends on a response turn, except for `ranking: true` datasets
(the prompt; the two answers are `chosen` / `rejected`) and prompt-only rows (an alpaca record
without a response, allowed for the pt and unsupervised kinds). Every error names the file and row;
LLaMA-Factory drops such rows with a warning, ftflow refuses them so nothing is silently lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ftcore.errors import DataError

# LLaMA-Factory's defaults for `columns` and `tags`.
ALPACA_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system"}
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
OPENAI_TAGS = {
    **SHAREGPT_TAGS,
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
}

PROMPT_ROLES = ("user", "observation")
RESPONSE_ROLES = ("assistant", "function")
# Data kinds whose rows may have no response (ftcore.data.processor.STAGE_DATA's values).
PROMPT_ONLY_KINDS = ("pt", "unsupervised")

Converter = Callable[[dict[str, Any], str], dict[str, Any]]


def converter(entry: dict[str, Any], kind: str = "sft") -> Converter:
    """The function turning one raw record of this dataset_info.json entry into a normalized row,
    checked for what data `kind` needs (sft: a response; pairwise: chosen + rejected; kto: a tag)."""
    if entry.get("formatting", "alpaca") == "alpaca":
        return _alpaca_converter(entry, kind)
    return _sharegpt_converter(entry, kind)


def _alpaca_columns(entry: dict[str, Any]) -> dict[str, str]:
    """`columns` over the defaults; `text` names the prompt column (pre-training text)."""
    given = dict(entry.get("columns", {}))
    if "text" in given:
        given.setdefault("prompt", given.pop("text"))
    return {**ALPACA_COLUMNS, **given}


def row(
    messages: list[dict[str, str]],
    system: str | None = None,
    tools: str | None = None,
    chosen: dict[str, str] | None = None,
    rejected: dict[str, str] | None = None,
    kto_tag: bool | None = None,
) -> dict[str, Any]:
    """A normalized row with every field present (the Arrow schema has them all)."""
    return {
        "messages": messages,
        "system": system,
        "tools": tools,
        "chosen": chosen,
        "rejected": rejected,
        "kto_tag": kto_tag,
    }


def _text(raw: dict[str, Any], column: str | None, where: str, required: bool = False) -> str | None:
    """A string column; absent or null is None unless required, any other type is an error."""
    value = raw.get(column) if column else None
    if value is None:
        if required:
            raise DataError(f"{where}: missing required column '{column}' (found: {', '.join(raw)})")
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: column '{column}' must be a string, got {type(value).__name__}")
    return value


def _kto_tag(raw: dict[str, Any], column: str | None, where: str, kind: str) -> bool | None:
    value = raw.get(column) if column else None
    if value is None:
        if kind == "kto":
            raise DataError(
                f"{where}: stage kto needs a true/false '{column or 'kto_tag'}' column "
                f"(found: {', '.join(raw)}); set columns.kto_tag in dataset_info.json"
            )
        return None
    if not isinstance(value, bool):
        raise DataError(f"{where}: column '{column}' (kto_tag) must be true or false, got {value!r}")
    return value


def _tools(raw: dict[str, Any], column: str | None, where: str) -> str | None:
    """The tools column as JSON text (LLaMA-Factory accepts a JSON string or the list itself)."""
    value = raw.get(column) if column else None
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: column '{column}' is not valid JSON: {exc.msg}") from exc
    else:
        parsed, value = value, json.dumps(value, ensure_ascii=False)
    tools = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(t, dict) for t in tools):
        raise DataError(f"{where}: column '{column}' must hold a list of tool (function) objects")
    return value if tools else None


def check_function_call(content: str, where: str) -> None:
    """A function_call turn holds JSON: {"name", "arguments"} or a list of them."""
    try:
        calls = json.loads(content)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: function_call content is not valid JSON: {exc.msg}") from exc
    for call in calls if isinstance(calls, list) else [calls]:
        if not isinstance(call, dict) or "name" not in call or "arguments" not in call:
            raise DataError(
                f'{where}: function_call content must be {{"name": ..., "arguments": ...}} objects'
            )


def _check_kind(
    messages: list[dict[str, str]], kind: str, where: str, chosen: Any, rejected: Any, ranking: bool
) -> None:
    if kind == "pairwise" and (chosen is None or rejected is None):
        raise DataError(f"{where}: a preference row needs both 'chosen' and 'rejected' answers")
    ends_on_response = bool(messages) and messages[-1]["role"] in RESPONSE_ROLES
    if ranking or ends_on_response or kind in PROMPT_ONLY_KINDS:
        return
    raise DataError(f"{where}: a conversation must end with an assistant turn (got {len(messages)} turns)")


def _alpaca_converter(entry: dict[str, Any], kind: str) -> Converter:
    """A function turning one alpaca record into a normalized row."""
    cols = _alpaca_columns(entry)
    explicit_prompt = "prompt" in entry.get("columns", {}) or "text" in entry.get("columns", {})
    ranking = bool(entry.get("ranking"))

    def convert(raw: dict[str, Any], where: str) -> dict[str, Any]:
        column = cols["prompt"]
        if not explicit_prompt and column not in raw and "text" in raw:
            column = "text"  # a .txt file's lines, or plain {"text": ...} rows
        prompt = _text(raw, column, where, required=True)
        query = _text(raw, cols["query"], where)
        messages = []
        history = raw.get(cols["history"]) if cols["history"] else None
        if history is not None:
            if not isinstance(history, list) or not all(
                isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn)
                for turn in history
            ):
                raise DataError(f"{where}: column '{cols['history']}' must be a list of [prompt, response]")
            for old_prompt, old_response in history:
                messages += [_msg("user", old_prompt), _msg("assistant", old_response)]
        messages.append(_msg("user", "\n".join(part for part in (prompt, query) if part)))
        chosen = rejected = None
        if ranking:
            need = kind == "pairwise"
            chosen_text = _text(raw, cols.get("chosen", "chosen"), where, required=need)
            rejected_text = _text(raw, cols.get("rejected", "rejected"), where, required=need)
            chosen = None if chosen_text is None else _msg("assistant", chosen_text)
            rejected = None if rejected_text is None else _msg("assistant", rejected_text)
        else:
            response = _text(raw, cols["response"], where, required=kind not in PROMPT_ONLY_KINDS)
            if response is not None:
                messages.append(_msg("assistant", response))
        _check_kind(messages, kind, where, chosen, rejected, ranking)
        return row(
            messages,
            _text(raw, cols["system"], where),
            _tools(raw, cols.get("tools"), where),
            chosen,
            rejected,
            _kto_tag(raw, cols.get("kto_tag"), where, kind),
        )

    return convert


def _sharegpt_converter(entry: dict[str, Any], kind: str) -> Converter:
    """A function turning one sharegpt (or OpenAI messages) record into a normalized row."""
    openai = entry.get("formatting") == "openai"
    defaults = {**SHAREGPT_COLUMNS, "messages": "messages"} if openai else SHAREGPT_COLUMNS
    cols = {**defaults, **entry.get("columns", {})}
    explicit_tags = "tags" in entry or openai
    tags = {**(OPENAI_TAGS if openai else SHAREGPT_TAGS), **entry.get("tags", {})}
    explicit_messages = "messages" in entry.get("columns", {})
    ranking = bool(entry.get("ranking"))

    def convert(raw: dict[str, Any], where: str) -> dict[str, Any]:
        column = cols["messages"]
        if not explicit_messages and column not in raw and "messages" in raw:
            column = "messages"  # OpenAI-style rows
        turns = raw.get(column)
        if turns is None:
            raise DataError(f"{where}: missing required column '{column}' (found: {', '.join(raw)})")
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise DataError(f"{where}: column '{column}' must be a list of message objects")
        row_tags = tags
        if not explicit_tags and turns and "role" in turns[0] and tags["role_tag"] not in turns[0]:
            row_tags = OPENAI_TAGS
        role_of = {row_tags[f"{role}_tag"]: role for role in ("user", "assistant", "observation")}
        role_of[row_tags["function_tag"]] = "function"
        system = _text(raw, cols["system"], where)
        offset = 0
        if turns and turns[0].get(row_tags["role_tag"]) == row_tags["system_tag"]:
            system = _content(turns[0], row_tags, where, 0)
            turns, offset = turns[1:], 1
        messages = []
        for i, turn in enumerate(turns):
            tag = turn.get(row_tags["role_tag"])
            role = role_of.get(tag)
            allowed = PROMPT_ROLES if i % 2 == 0 else RESPONSE_ROLES
            if role not in allowed:
                want = " or ".join(repr(k) for k, v in role_of.items() if v in allowed)
                raise DataError(
                    f"{where}: message {i + offset} has {row_tags['role_tag']}={tag!r}, expected {want} "
                    "(turns must alternate user/observation and assistant/function_call after an optional "
                    "leading system turn)"
                )
            if role == "observation" and (not messages or messages[-1]["role"] != "function"):
                raise DataError(
                    f"{where}: message {i + offset} is an observation but does not follow a function_call"
                )
            if messages and messages[-1]["role"] == "function" and role != "observation":
                raise DataError(
                    f"{where}: message {i + offset} follows a function_call but is not an observation"
                )
            content = _content(turn, row_tags, where, i + offset)
            if role == "function":
                check_function_call(content, f"{where}: message {i + offset}")
            messages.append(_msg(role, content))
        chosen = rejected = None
        if ranking:
            if len(messages) % 2 == 0:
                raise DataError(
                    f"{where}: a preference row's '{column}' must end with a user turn (the prompt); "
                    f"got {len(messages)} turns"
                )
            chosen = _answer(raw, cols.get("chosen", "chosen"), row_tags, role_of, where, kind)
            rejected = _answer(raw, cols.get("rejected", "rejected"), row_tags, role_of, where, kind)
        _check_kind(messages, kind, where, chosen, rejected, ranking)
        return row(
            messages,
            system,
            _tools(raw, cols.get("tools"), where),
            chosen,
            rejected,
            _kto_tag(raw, cols.get("kto_tag"), where, kind),
        )

    return convert


def _answer(
    raw: dict[str, Any], column: str, tags: dict[str, str], role_of: dict[str, str], where: str, kind: str
) -> dict[str, str] | None:
    """The chosen / rejected message of a sharegpt preference row."""
    value = raw.get(column)
    if value is None:
        if kind == "pairwise":
            raise DataError(f"{where}: missing required column '{column}' (found: {', '.join(raw)})")
        return None
    if not isinstance(value, dict):
        raise DataError(f"{where}: column '{column}' must be one message object")
    role = role_of.get(value.get(tags["role_tag"]))
    if role not in RESPONSE_ROLES:
        raise DataError(
            f"{where}: column '{column}' has {tags['role_tag']}={value.get(tags['role_tag'])!r}, "
            f"expected {tags['assistant_tag']!r} or {tags['function_tag']!r}"
        )
    content = _content(value, tags, f"{where}: column '{column}'", None)
    if role == "function":
        check_function_call(content, f"{where}: column '{column}'")
    return _msg(role, content)


def _content(turn: dict[str, Any], tags: dict[str, str], where: str, index: int | None) -> str:
    content = turn.get(tags["content_tag"])
    if not isinstance(content, str):
        what = "" if index is None else f" message {index}"
        raise DataError(f"{where}:{what} needs a string '{tags['content_tag']}'")
    return content


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}
