"""The tool formats of ftcore/data/tools.py in Jinja, for the chat_template a trained model carries
(ftcore.data.chat_jinja): the same tool list, calls and results, rendered by transformers / vLLM."""

from __future__ import annotations

import json

from ftcore.data.tools import (
    _GLM4_MOE_TOOLS,
    _GLM4_TOOL,
    _GLM4_TOOLS,
    _GRANITE4_TOOLS,
    _LLAMA3_DATE,
    _LLAMA3_TOOLS,
    _QWEN_TOOLS,
)

# The same formats in Jinja, for the chat_template a trained model carries (ftcore.data.chat_jinja):
# `system_jinja` sets `system` from `system` and `tools`; `calls_jinja` sets `calls` from
# `message.tool_calls` (OpenAI shape: {"type": "function", "function": {"name", "arguments"}}).
_WRAP = "(tool if tool.type == 'function' else {'type': 'function', 'function': tool})"
_CALL = "{%- set f = call.function if call.function is defined else call -%}"


def _lit(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _qwen_system_jinja(listing: str = _QWEN_TOOLS) -> str:
    before, after = listing.split("<<TOOLS>>")
    return (
        "{%- set ns_tools = namespace(text='') -%}"
        f"{{%- for tool in tools -%}}{{%- set ns_tools.text = ns_tools.text + '\\n' + ({_WRAP} | tojson) -%}}"
        "{%- endfor -%}"
        f"{{%- set listed = {_lit(before)} + ns_tools.text + {_lit(after)} -%}}"
        "{%- set system = (system + '\\n\\n' + listed) if system else listed -%}"
    )


def _llama3_system_jinja(date: bool) -> str:
    before, after = _LLAMA3_TOOLS.split("<<TOOLS>>")
    head = _lit((_LLAMA3_DATE if date else "") + before)
    return (
        "{%- set ns_tools = namespace(text='') -%}"
        f"{{%- for tool in tools -%}}{{%- set ns_tools.text = ns_tools.text + ({_WRAP} | tojson(indent=4)) "
        "+ '\\n\\n' -%}{%- endfor -%}"
        f"{{%- set system = (system or '') + {head} + ns_tools.text + {_lit(after)} -%}}"
    )


_QWEN_CALLS_JINJA = (
    "{%- set ns_calls = namespace(parts=[]) -%}"
    f"{{%- for call in message.tool_calls -%}}{_CALL}"
    "{%- set ns_calls.parts = ns_calls.parts + ['<tool_call>\\n' + "
    "({'name': f.name, 'arguments': f.arguments} | tojson) + '\\n</tool_call>'] -%}{%- endfor -%}"
    "{%- set calls = ns_calls.parts | join('\\n') -%}"
)
_LLAMA3_CALLS_JINJA = (
    "{%- set ns_calls = namespace(parts=[]) -%}"
    f"{{%- for call in message.tool_calls -%}}{_CALL}"
    "{%- set ns_calls.parts = ns_calls.parts + [{'name': f.name, 'parameters': f.arguments}] -%}"
    "{%- endfor -%}"
    "{%- set calls = (ns_calls.parts[0] if ns_calls.parts | length == 1 else ns_calls.parts) | tojson -%}"
)


def _glm4_system_jinja() -> str:
    before, after = _GLM4_TOOL.split("<<NAME>>")
    middle, end = after.split("<<BODY>>")
    return (
        f"{{%- set ns_tools = namespace(text={_lit(_GLM4_TOOLS)}) -%}}"
        "{%- for tool in tools -%}{%- set f = tool.function if tool.function is defined else tool -%}"
        f"{{%- set ns_tools.text = ns_tools.text + {_lit(before)} + f.name + {_lit(middle)} + "
        f"(f | tojson(indent=4)) + {_lit(end)} -%}}{{%- endfor -%}}"
        "{%- set system = ns_tools.text + (('<|system|>\\n' + system) if system else '') -%}"
    )


_GLM4_CALLS_JINJA = (
    "{%- if message.tool_calls | length != 1 -%}"
    "{{- raise_exception('GLM-4 calls one function per reply') -}}{%- endif -%}"
    f"{{%- for call in message.tool_calls -%}}{_CALL}"
    "{%- set calls = f.name + '\\n' + (f.arguments | tojson) -%}{%- endfor -%}"
)

_MISTRAL_LISTING_JINJA = (
    "{{- '[AVAILABLE_TOOLS] [' -}}{%- for tool in tools -%}"
    "{%- set f = tool.function if tool.function is defined else tool -%}"
    '{{- \'{"type": "function", "function": {\' -}}'
    "{%- for key, val in f.items() if key != 'return' -%}"
    "{%- if val is string -%}{{- '\"' + key + '\": \"' + val + '\"' -}}"
    "{%- else -%}{{- '\"' + key + '\": ' + val | tojson -}}{%- endif -%}"
    "{%- if not loop.last -%}{{- ', ' -}}{%- endif -%}{%- endfor -%}"
    "{{- '}}' -}}{%- if not loop.last -%}{{- ', ' -}}{%- endif -%}{%- endfor -%}"
    "{{- '][/AVAILABLE_TOOLS]' -}}"
)
_MISTRAL_CALLS_JINJA = (
    "{%- set ns_calls = namespace(parts=[]) -%}"
    f"{{%- for call in message.tool_calls -%}}{_CALL}"
    "{%- set ns_calls.parts = ns_calls.parts + [({'name': f.name, 'arguments': f.arguments} | tojson)[:-1]"
    " + ', \"id\": \"' + call.id + '\"}'] -%}{%- endfor -%}"
    "{%- set calls = '[' + ns_calls.parts | join(', ') + ']' -%}"
)
# sets `content` of a tool message (OpenAI shape: content, tool_call_id)
_MISTRAL_RESULTS_JINJA = (
    '{%- set content = \'[TOOL_RESULTS] {"content": \' + content + \', "call_id": "\' '
    "+ message.tool_call_id + '\"}[/TOOL_RESULTS]' -%}"
)


def _glm4_moe_system_jinja() -> str:
    before, after = _GLM4_MOE_TOOLS.split("<<TOOLS>>")
    return (
        f"{{%- set ns_tools = namespace(text={_lit(before)}) -%}}"
        f"{{%- for tool in tools -%}}{{%- set ns_tools.text = ns_tools.text + ({_WRAP} | tojson) + '\\n' -%}}"
        "{%- endfor -%}"
        f"{{%- set system = ns_tools.text + {_lit(after)} + "
        "(('<|system|>\\n' + system) if system else '') -%}"
    )


_GLM4_MOE_CALLS_JINJA = (
    "{%- set ns_calls = namespace(parts=[]) -%}"
    f"{{%- for call in message.tool_calls -%}}{_CALL}"
    "{%- set ns_args = namespace(text='') -%}{%- for k, v in f.arguments.items() -%}"
    "{%- set ns_args.text = ns_args.text + '<arg_key>' + k + '</arg_key>\\n<arg_value>' + "
    "(v if v is string else v | tojson) + '</arg_value>\\n' -%}{%- endfor -%}"
    "{%- set ns_calls.parts = ns_calls.parts + ['<tool_call>' + f.name + '\\n' + ns_args.text "
    "+ '</tool_call>'] -%}"
    "{%- endfor -%}"
    "{%- set calls = ns_calls.parts | join('\\n') -%}"
)

# tool_format -> (system_jinja, calls_jinja)
TOOL_JINJA: dict[str, tuple[str, str]] = {
    "qwen": (_qwen_system_jinja(), _QWEN_CALLS_JINJA),
    "llama3": (_llama3_system_jinja(date=True), _LLAMA3_CALLS_JINJA),
    "llama3.1": (_llama3_system_jinja(date=False), _LLAMA3_CALLS_JINJA),
    "glm4": (_glm4_system_jinja(), _GLM4_CALLS_JINJA),
    "granite4": (_qwen_system_jinja(_GRANITE4_TOOLS), _QWEN_CALLS_JINJA),
    "mistral": ("", _MISTRAL_CALLS_JINJA),
    "glm4_moe": (_glm4_moe_system_jinja(), _GLM4_MOE_CALLS_JINJA),
}
# tool_format -> the tool list written before the last user turn / a tool message's content
LISTING_JINJA: dict[str, str] = {"mistral": _MISTRAL_LISTING_JINJA}
RESULTS_JINJA: dict[str, str] = {
    "mistral": _MISTRAL_RESULTS_JINJA,
    "glm4_moe": "{%- set content = '\\n<tool_response>\\n' + content + '\\n</tool_response>' -%}",
}
