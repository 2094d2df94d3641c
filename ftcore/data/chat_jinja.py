"""Jinja for a Template: the chat_template a trained model carries, rendering what training encoded.

The segments of the Template are embedded as string literals in one generic Jinja program, so the
rules live once (in Template) and this module only mirrors them: bos, the system turn (given, the
default, or always written), content trimming, and Qwen3-style reasoning blocks with the serving
switch `enable_thinking` (default: the template's own). Tests render it with transformers and
compare the ids with Template.encode_multiturn / encode_prompt.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from ftcore.data.tools_jinja import LISTING_JINJA, RESULTS_JINJA, TOOL_JINJA

if TYPE_CHECKING:
    from ftcore.data.template import Template


def _lit(value: str | None) -> str:
    # Jinja string literals take Python escapes; JSON's are a subset (non-ASCII left as is).
    return "none" if value is None else json.dumps(value, ensure_ascii=False)


def _text(value: str) -> str:
    """A literal in which {bos_token} / {eos_token} become the tokenizer's (Jinja variables)."""
    parts = re.split(r"\{(bos_token|eos_token)\}", value)
    out = [_lit(p) if i % 2 == 0 else p for i, p in enumerate(parts) if p or i % 2]
    return " + ".join(out) or "''"


def _fill(pattern: str, expr: str, trim: bool, lead: str | None = None) -> str:
    before, after = pattern.split("{content}")
    content = f"(({expr}) | trim)" if trim else f"({expr})"
    if lead:
        content = f"({lead}) + {content}"
    parts = [_text(before)] if before else []
    parts += [content] + ([_text(after)] if after else [])
    return " + ".join(parts)


def _merged_results(pattern: str, results: str) -> list[str]:
    """Tool messages of a format with one block per result (Mistral v3, GLM-4.5): consecutive ones
    share the observation turn, its opening written before the first, its closing after the last."""
    before, after = pattern.split("{content}")
    tool = "['role'] in ['tool', 'observation']"
    return [
        f"      {results}",
        f"      {{%- set prev_tool = not loop.first and turns[loop.index0 - 1]{tool} -%}}",
        f"      {{%- set next_tool = not loop.last and turns[loop.index0 + 1]{tool} -%}}",
        f"      {{{{- ({_text(before)} if not prev_tool else '') + content"
        f" + ({_text(after)} if not next_tool else '') -}}}}",
    ]


def render_jinja(template: Template) -> str:
    """The Jinja source of `template` (see the module docstring)."""
    t, trim = template, template.trim_content
    think = t.thinking
    lines = [
        f"{{#- ftflow chat template '{t.name}': renders the ids ftflow trained with -#}}",
        f"{{%- set system = {_lit(t.default_system)} -%}}{{%- set turns = messages -%}}",
        "{%- set prompt_roles = "
        + ("['user', 'tool', 'observation']" if t.tool_format else "['user']")
        + " -%}",
        "{%- if messages and messages[0]['role'] == 'system' -%}",
        "  {%- set system = messages[0]['content'] or system -%}{%- set turns = messages[1:] -%}",
        "{%- endif -%}",
    ]
    listing = LISTING_JINJA.get(t.tool_format or "")  # a block of its own before the last user turn
    if t.tool_format:
        system_tools, calls = TOOL_JINJA[t.tool_format]
        lines.append(f"{{%- if tools is defined and tools -%}}{system_tools}{{%- endif -%}}")
    # the user turn that carries the system block and a tool listing: the first, or the last one
    lines.append(
        "{%- set ns_user = namespace(block=0) -%}"
        + (
            "{%- for m in turns -%}{%- if m['role'] == 'user' -%}{%- set ns_user.block = loop.index0 -%}"
            "{%- endif -%}{%- endfor -%}"
            if t.system_in_last_user
            else ""
        )
    )
    if t.bos:
        lines.append(f"{{{{- {_text(t.bos)} -}}}}")
    condition = "true" if t.always_system else "system"
    system_expr = "system or ''"
    lead = None
    if t.system_in_user:  # the system block opens the first user turn, untrimmed
        block = _fill(t.format_system, system_expr, False)
        lines.append(f"{{%- set lead = ({block}) if {condition} else '' -%}}")
        lead = "lead if loop.index0 == ns_user.block else ''"
    else:
        lines.append(
            f"{{%- if {condition} -%}}{{{{- {_fill(t.format_system, system_expr, trim)} -}}}}{{%- endif -%}}"
        )
    if think:
        default = "true" if think.enabled else "false"
        lines.append(f"{{%- set thinking = enable_thinking if enable_thinking is defined else {default} -%}}")
    user_content = "content"
    if think and think.off_suffix:
        suffix = _lit(think.off_suffix)
        user_content = f"(content + {suffix} if not thinking and not content.endswith({suffix}) else content)"
    results = RESULTS_JINJA.get(t.tool_format or "")
    observation = (
        _merged_results(t.format_observation or t.format_user, results)
        if results
        else [f"      {{{{- {_fill(t.format_observation or t.format_user, 'content', trim, lead)} -}}}}"]
    )
    lines += [
        "{%- for message in turns -%}",
        "  {%- set content = message['content'] or '' -%}",
        "  {%- if message['role'] in prompt_roles -%}",
        "    {%- if message['role'] == 'user' -%}",
    ]
    if listing:
        lines.append(
            "      {%- if tools is defined and tools and loop.index0 == ns_user.block -%}"
            f"{listing}{{%- endif -%}}"
        )
    lines += [
        f"      {{{{- {_fill(t.format_user, user_content, trim, lead)} -}}}}",
        "    {%- else -%}",
        *observation,
        "    {%- endif -%}",
    ]
    if think:
        lines += [
            "    {%- set before_reply = loop.revindex == 2 and turns[-1]['role'] == 'assistant' -%}",
            "    {%- if not thinking and ((loop.last and add_generation_prompt) or before_reply) -%}",
            f"      {{{{- {_lit(think.empty)} -}}}}",
            "    {%- endif -%}",
        ]
    lines.append("  {%- elif message['role'] == 'assistant' -%}")
    lines.append("    {%- set calling = message.tool_calls is defined and message.tool_calls -%}")
    if t.tool_format:
        lines += [
            f"    {{%- if calling -%}}{calls}",
            "      {%- set content = (content + '\\n' + calls) if content else calls -%}",
            "    {%- endif -%}",
        ]
    trim_reply = "{%- set content = content | trim -%}" if t.trim_reply else ""
    if think:
        start, end = _lit(think.open.strip()), _lit(think.close.strip())
        strip = ".lstrip('\\n')" if think.trim_answer else ""
        kept_expr = "reasoning.strip()" if t.trim_reply else "reasoning.strip('\\n')"
        empty = "true" if think.keep_empty else "false"
        lines += [
            "    {%- set reasoning = '' -%}",
            f"    {{%- if {end} in content -%}}",
            f"      {{%- set reasoning = content.split({end})[0].rstrip('\\n')"
            f".split({start})[-1].lstrip('\\n') -%}}",
            f"      {{%- set content = content.split({end})[-1]{strip} -%}}",
            "    {%- endif -%}",
            f"    {trim_reply}",
            "    {%- set kept = loop.last and thinking"
            + ("" if think.write_empty else " and reasoning.strip() != ''")
            + " -%}",
            "    {%- set in_prompt = loop.last and not thinking -%}",
            f"    {{%- if kept or ({empty} and not in_prompt) -%}}",
            f"      {{%- set reasoning = {kept_expr} if kept else '' -%}}",
            "      {%- set answer = content.lstrip('\\n') -%}",
            f"      {{%- set content = {_lit(think.open)} + reasoning + {_lit(think.close)}"
            f" + (({_lit(think.sep)} + answer) if answer else '') -%}}",
            f"    {{%- elif in_prompt and {_lit(think.sep)} and content -%}}",
            f"      {{%- set content = {_lit(think.sep)} + content.lstrip('\\n') -%}}",
            "    {%- endif -%}",
        ]
    elif t.trim_reply:
        lines.append(f"    {trim_reply}")
    lines += [
        "    {%- if calling -%}",
        f"      {{{{- {_fill(t.format_function or t.format_assistant, 'content', trim)} -}}}}",
        "    {%- else -%}",
        f"      {{{{- {_fill(t.format_assistant, 'content', trim)} -}}}}",
        "    {%- endif -%}",
        "  {%- else -%}",
        "    {{- raise_exception('only system (first), user, assistant and tool messages are supported') -}}",
        "  {%- endif -%}",
        "{%- endfor -%}",
    ]
    if t.efficient_eos:  # after a conversation that ends with a reply, as training encoded it
        lines.append(
            "{%- if turns and turns[-1]['role'] == 'assistant' and not add_generation_prompt -%}"
            f"{{{{- {_text(t.efficient_eos)} -}}}}{{%- endif -%}}"
        )
    return "\n".join(lines)
