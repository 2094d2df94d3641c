"""Tool (function-calling) text of the chat templates: the tool list in the system turn and the
assistant's function calls, per family, as LLaMA-Factory's tool utils write them.

`qwen` matches Qwen2.5 / Qwen3's official templates (tests compare); `llama3` is LLaMA-Factory's
Llama 3 format (tools described in the system turn, calls as {"name", "parameters"} JSON) with the
date fixed to the official template's default, so the same rows always give the same ids;
`llama3.1` is the same without the date header, which that template's system turn already writes.
"""

from __future__ import annotations

import json
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
_LLAMA3_DATE = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
_LLAMA3_TOOLS = (
    "You have access to the following functions. To call a function, please respond with JSON for a "
    'function call. Respond in the format {"name": function name, "parameters": dictionary of '
    "function arguments}. Do not use variables.\n\n<<TOOLS>>"
)


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


@dataclass(frozen=True)
class ToolFormat:
    """How a family writes tools into the system prompt and function calls into a reply."""

    system: Callable[[str, str], str]  # (system prompt, tools JSON) -> system turn content
    calls: Callable[[str], str]  # function_call JSON -> the reply text


TOOL_FORMATS: dict[str, ToolFormat] = {
    "qwen": ToolFormat(_qwen_system, _qwen_calls),
    "llama3": ToolFormat(
        lambda system, tools: system + _LLAMA3_DATE + _llama3_tool_text(tools), _llama3_calls
    ),
    "llama3.1": ToolFormat(lambda system, tools: system + _llama3_tool_text(tools), _llama3_calls),
}
