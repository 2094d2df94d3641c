"""Tool (function-calling) text of the chat templates: the tool list in the system turn and the
assistant's function calls, per family, as LLaMA-Factory's tool utils write them.

`qwen` matches Qwen2.5 / Qwen3's official templates (tests compare); `llama3` is LLaMA-Factory's
Llama 3 format (tools described in the system turn, calls as {"name", "parameters"} JSON) with the
date fixed to the official template's default, so the same rows always give the same ids;
`llama3.1` is the same without the date header, which that template's system turn already writes;
`glm4` matches glm-4-9b-chat's official template (one call per reply, "name\n{arguments}");
`granite4` Granite 4.0's (its own tool list, Qwen's <tool_call> calls); `mistral` Mistral v0.3's
(v3 tokenizer: the tool list as its own block before the last user turn, calls and results tied by
9-character call ids); `glm4_moe` GLM-4.5's (Qwen-like tool list, <arg_key>/<arg_value> calls).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ftcore.errors import DataError

_QWEN_TOOLS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
    "<<TOOLS>>\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_GRANITE4_TOOLS = (
    "You are a helpful assistant with access to the following tools. You may call one or more tools to "
    "assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML "
    "tags:\n<tools><<TOOLS>>\n</tools>\n\nFor each tool call, return a json object with function name and "
    'arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call>. If a tool does not exist in the provided list of '
    "tools, notify the user that you do not have the ability to fulfill the request."
)
_LLAMA3_DATE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
_LLAMA3_TOOLS = (
    "You have access to the following functions. To call a function, please respond with JSON for a "
    'function call. Respond in the format {"name": function name, "parameters": dictionary of '
    "function arguments}. Do not use variables.\n\n<<TOOLS>>"
)


_GLM4_TOOLS = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具"
)
# One "\n" before "##": the official template's "\n\n" follows a block tag, whose first newline
# Jinja drops (trim_blocks, as transformers and vLLM render it).
_GLM4_TOOL = "\n## <<NAME>>\n\n<<BODY>>\n在调用上述函数时，请使用 Json 格式表示调用的参数。"


def _wrap(tool: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's {"type": "function", "function": ...} shape, as the official templates print tools."""
    return tool if tool.get("type") == "function" else {"type": "function", "function": tool}


def parse_tools(tools: str) -> list[dict[str, Any]]:
    """The tools column's JSON (a list of tools or one tool)."""
    parsed = json.loads(tools)
    return parsed if isinstance(parsed, list) else [parsed]


def parse_calls(content: str) -> list[tuple[str, Any]]:
    """(name, arguments) of each call in a function_call turn's JSON (one object or a list)."""
    try:
        calls = json.loads(content)
    except json.JSONDecodeError as exc:
        raise DataError(f"function_call content is not valid JSON: {exc.msg}: {content[:80]!r}") from exc
    return [(call["name"], call["arguments"]) for call in (calls if isinstance(calls, list) else [calls])]


def _qwen_system(system: str, tools: str) -> str:
    text = "".join("\n" + json.dumps(_wrap(t), ensure_ascii=False) for t in parse_tools(tools))
    listed = _QWEN_TOOLS.replace("<<TOOLS>>", text)
    return f"{system}\n\n{listed}" if system else listed


def _granite4_system(system: str, tools: str) -> str:
    text = "".join("\n" + json.dumps(_wrap(t), ensure_ascii=False) for t in parse_tools(tools))
    listed = _GRANITE4_TOOLS.replace("<<TOOLS>>", text)
    return f"{system}\n\n{listed}" if system else listed


def _qwen_calls(content: str) -> str:
    return "\n".join(
        "<tool_call>\n" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "\n</tool_call>"
        for name, args in parse_calls(content)
    )


def _llama3_tool_text(tools: str) -> str:
    text = "".join(json.dumps(_wrap(t), indent=4, ensure_ascii=False) + "\n\n" for t in parse_tools(tools))
    return _LLAMA3_TOOLS.replace("<<TOOLS>>", text)


def _llama3_calls(content: str) -> str:
    objects = [{"name": name, "parameters": args} for name, args in parse_calls(content)]
    return json.dumps(objects[0] if len(objects) == 1 else objects, ensure_ascii=False)


def _glm4_system(system: str, tools: str) -> str:
    """GLM-4's tool list (its own system turn, in its own words), then the system prompt's turn."""
    listed = _GLM4_TOOLS
    for tool in parse_tools(tools):
        function = _wrap(tool)["function"]
        body = json.dumps(function, indent=4, ensure_ascii=False)
        listed += _GLM4_TOOL.replace("<<NAME>>", function["name"]).replace("<<BODY>>", body)
    return listed + ("<|system|>\n" + system if system else "")


def _glm4_calls(content: str) -> str:
    calls = parse_calls(content)
    if len(calls) != 1:
        raise DataError(f"GLM-4 calls one function per reply; this function_call has {len(calls)}")
    name, args = calls[0]
    return name + "\n" + json.dumps(args, ensure_ascii=False)


_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 9  # Mistral's official template refuses any other length


def _derived_id(turn: int, index: int, name: str, args: Any) -> str:
    """A stable 9-character alphanumeric call id for a call that has none: a hash of its place in
    the conversation (turn, position in the turn) and the call itself, so a row always encodes to
    the same ids and two calls of one conversation get different ones."""
    key = json.dumps([turn, index, name, args], ensure_ascii=False, sort_keys=True)
    number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    chars = []
    for _ in range(_ID_LENGTH):
        number, digit = divmod(number, len(_ID_ALPHABET))
        chars.append(_ID_ALPHABET[digit])
    return "".join(chars)


def call_ids(content: str, turn: int) -> list[str]:
    """The call ids of a function_call turn (message index `turn`): a call's own "id" when it is 9
    alphanumeric characters (as Mistral's API writes them), else one derived from the call
    (_derived_id)."""
    calls = json.loads(content)
    ids = []
    for index, call in enumerate(calls if isinstance(calls, list) else [calls]):
        own = call.get("id")
        valid = isinstance(own, str) and len(own) == _ID_LENGTH and own.isalnum() and own.isascii()
        ids.append(own if valid else _derived_id(turn, index, call["name"], call["arguments"]))
    return ids


def _mistral_listing(tools: str) -> str:
    """Mistral v3's [AVAILABLE_TOOLS] block, written as its official template writes it: string
    values raw (not JSON-escaped), other values as JSON, a function's "return" key left out."""
    texts = []
    for tool in parse_tools(tools):
        function = _wrap(tool)["function"]
        fields = [
            f'"{k}": "{v}"' if isinstance(v, str) else f'"{k}": {json.dumps(v, ensure_ascii=False)}'
            for k, v in function.items()
            if k != "return"
        ]
        texts.append('{"type": "function", "function": {' + ", ".join(fields) + "}}")
    return "[AVAILABLE_TOOLS] [" + ", ".join(texts) + "][/AVAILABLE_TOOLS]"


def _mistral_calls(content: str, ids: list[str]) -> str:
    parts = [
        json.dumps({"name": name, "arguments": args}, ensure_ascii=False)[:-1] + f', "id": "{call_id}"}}'
        for (name, args), call_id in zip(parse_calls(content), ids, strict=True)
    ]
    return "[" + ", ".join(parts) + "]"


def _split_results(content: str, ids: list[str]) -> list[str]:
    """The results of an observation turn, one per call answered: its text for one call, the items of
    a JSON list of one result per call (in order) for several."""
    if not ids:
        raise DataError("a tool result (observation) must follow a function_call turn")
    if len(ids) == 1:
        return [content]
    try:
        parsed = json.loads(content)
    except json.JSONDecodeError:
        parsed = None
    if not (isinstance(parsed, list) and len(parsed) == len(ids)):
        raise DataError(
            f"the observation answers {len(ids)} calls, so it must be a JSON list of {len(ids)} "
            f"results (one per call, in order); got {content[:80]!r}"
        )
    return [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in parsed]


def _mistral_results(content: str, ids: list[str]) -> str:
    """One [TOOL_RESULTS] block per call answered, tied to it by its id."""
    return "".join(
        f'[TOOL_RESULTS] {{"content": {r}, "call_id": "{i}"}}[/TOOL_RESULTS]'
        for r, i in zip(_split_results(content, ids), ids, strict=True)
    )


def _glm4_moe_results(content: str, ids: list[str]) -> str:
    """One <tool_response> block per call answered, as GLM-4.5's template writes consecutive tool
    messages under one <|observation|>."""
    return "".join(f"\n<tool_response>\n{r}\n</tool_response>" for r in _split_results(content, ids))


_GLM4_MOE_TOOLS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n<<TOOLS>>"
    "</tools>\n\nFor each function call, output the function name and arguments within the following "
    "XML format:\n<tool_call>{function-name}\n<arg_key>{arg-key-1}</arg_key>\n<arg_value>{arg-value-1}"
    "</arg_value>\n<arg_key>{arg-key-2}</arg_key>\n<arg_value>{arg-value-2}</arg_value>\n...\n</tool_call>"
)


def _glm4_moe_system(system: str, tools: str) -> str:
    """GLM-4.5's tool list (its own system turn), then the system prompt's turn."""
    text = "".join(json.dumps(_wrap(t), ensure_ascii=False) + "\n" for t in parse_tools(tools))
    listed = _GLM4_MOE_TOOLS.replace("<<TOOLS>>", text)
    return listed + ("<|system|>\n" + system if system else "")


def _glm4_moe_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _glm4_moe_calls(content: str) -> str:
    return "\n".join(
        f"<tool_call>{name}\n"
        + "".join(
            f"<arg_key>{k}</arg_key>\n<arg_value>{_glm4_moe_value(v)}</arg_value>\n" for k, v in args.items()
        )
        + "</tool_call>"
        for name, args in parse_calls(content)
    )


@dataclass(frozen=True)
class ToolFormat:
    """How a family writes tools into the system prompt and function calls into a reply."""

    system: Callable[[str, str], str]  # (system prompt, tools JSON) -> system turn content
    calls: Callable[[str], str]  # function_call JSON -> the reply text
    # Mistral v3: the tool list is a block of its own before the last user turn (not in the system
    # turn), and calls / results carry call ids: (JSON, ids of the calls) -> text; `results` also
    # writes one block per call answered (Mistral v3, GLM-4.5)
    listing: Callable[[str], str] | None = None
    id_calls: Callable[[str, list[str]], str] | None = None
    results: Callable[[str, list[str]], str] | None = None

    def render_calls(self, content: str, ids: list[str]) -> str:
        """A function_call turn's text (with the call ids where the family writes them)."""
        return self.id_calls(content, ids) if self.id_calls else self.calls(content)

    def render_results(self, content: str, ids: list[str]) -> str:
        """An observation turn's text, tied to the ids of the calls it answers where the family does."""
        return self.results(content, ids) if self.results else content


TOOL_FORMATS: dict[str, ToolFormat] = {
    "qwen": ToolFormat(_qwen_system, _qwen_calls),
    "llama3": ToolFormat(
        lambda system, tools: system + _LLAMA3_DATE + _llama3_tool_text(tools), _llama3_calls
    ),
    "llama3.1": ToolFormat(lambda system, tools: system + _llama3_tool_text(tools), _llama3_calls),
    "glm4": ToolFormat(_glm4_system, _glm4_calls),
    "granite4": ToolFormat(_granite4_system, _qwen_calls),  # Granite 4 writes calls as Qwen does
    "mistral": ToolFormat(
        lambda system, tools: system,
        lambda content: _mistral_calls(content, call_ids(content, 0)),
        listing=_mistral_listing,
        id_calls=_mistral_calls,
        results=_mistral_results,
    ),
    "glm4_moe": ToolFormat(_glm4_moe_system, _glm4_moe_calls, results=_glm4_moe_results),
}
