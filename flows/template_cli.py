"""`ft template list` and `ft template show NAME`: the chat templates, and exactly what a template
trains on (the label part of every turn marked), on a real tokenizer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

COMMANDS = ("template",)

EXAMPLE = [
    {"role": "user", "content": "Add the two numbers.\n12 + 7"},
    {"role": "assistant", "content": "19"},
    {"role": "user", "content": "And 3 + 4?"},
    {"role": "assistant", "content": "7"},
]
GREEN, RESET = "\033[32m", "\033[0m"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    text = "list the chat templates, or show what one renders and trains on"
    cmd = sub.add_parser("template", help=text, description=text)
    template_sub = cmd.add_subparsers(dest="template_command", required=True)
    listing = template_sub.add_parser("list", help="every template: family, verified, tool format, thinking")
    listing.add_argument("--markdown", action="store_true", help="a Markdown table (the README's)")
    show = template_sub.add_parser(
        "show",
        help="render a conversation: the text and token ids, the trained (label) part marked",
        epilog="example: ft template show qwen3 --messages chat.json --tokenizer ./my-model",
    )
    show.add_argument("name", help="template name (`ft template list`)")
    show.add_argument(
        "--messages",
        help='JSON file: a list of {"role", "content"} (a first "system" message is the system prompt), '
        'or {"messages": [...], "system": ..., "tools": ...}; default: a two-turn example',
    )
    show.add_argument(
        "--tokenizer",
        help="model folder whose tokenizer encodes it, or builtin:NAME; default: the first built-in "
        "model whose tokenizer has the template's special tokens",
    )
    show.add_argument("--no-color", action="store_true", help="mark trained parts with [[ ]], not colour")


def template_rows() -> list[dict[str, str]]:
    """One row per template, for `ft template list` and the README table."""
    from ftcore.data.template import get_template, list_templates

    rows = []
    for name in list_templates():
        t = get_template(name)
        thinking = "-" if t.thinking is None else ("on" if t.thinking.enabled else "off")
        rows.append(
            {
                "name": name,
                "family": t.family or name,
                "verified": f"yes ({Path(t.verified_by).name})" if t.verified_by else "no",
                "tools": t.tool_format or "-",
                "thinking": thinking,
            }
        )
    return rows


def _list(markdown: bool) -> int:
    rows = template_rows()
    heads = ["name", "family", "verified", "tools", "thinking"]
    if markdown:
        print("| template | family | verified against official Jinja | tool format | thinking |")
        print("| --- | --- | --- | --- | --- |")
        for row in rows:
            print("| " + " | ".join(f"`{row['name']}`" if h == "name" else row[h] for h in heads) + " |")
        return 0
    widths = {h: max(len(h), *(len(r[h]) for r in rows)) for h in heads}
    print("  ".join(h.upper().ljust(widths[h]) for h in heads).rstrip())
    for row in rows:
        print("  ".join(row[h].ljust(widths[h]) for h in heads).rstrip())
    verified = sum(r["verified"] != "no" for r in rows)
    print(f"{len(rows)} templates, {verified} checked token for token against the official Jinja")
    return 0


def _conversation(path: str | None) -> tuple[list[dict[str, str]], str | None, str | None]:
    """(messages, system, tools JSON) from a --messages file."""
    from ftcore.errors import DataError

    if path is None:
        return EXAMPLE, None, None
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"--messages {path}: cannot read it as JSON: {exc}") from exc
    system, tools = None, None
    if isinstance(data, dict):
        system, tools = data.get("system"), data.get("tools")
        data = data.get("messages")
    if not isinstance(data, list) or not all(isinstance(m, dict) and "role" in m for m in data):
        raise DataError(f'--messages {path}: expected a list of {{"role", "content"}} messages')
    if data and data[0]["role"] == "system":
        system, data = data[0].get("content"), data[1:]
    roles = {"tool": "observation"}
    messages = [{"role": roles.get(m["role"], m["role"]), "content": m.get("content") or ""} for m in data]
    if tools is not None and not isinstance(tools, str):
        tools = json.dumps(tools)
    return messages, system, tools


def _tokenizer(spec: str | None, template: Any) -> tuple[Any, str]:
    """(tokenizer, where it came from)."""
    from ftcore.builtin import BUILTINS, ensure_builtin
    from ftcore.errors import ConfigError, ModelNotAvailableError
    from ftcore.modeling import load_tokenizer

    if spec is not None:
        if spec.startswith("builtin:"):
            if spec[8:] not in BUILTINS:
                raise ModelNotAvailableError(f"--tokenizer: unknown built-in '{spec}'")
            tokenizer = load_tokenizer(ensure_builtin(spec[8:]))
        elif Path(spec).is_dir():
            tokenizer = load_tokenizer(spec)
        else:
            raise ModelNotAvailableError(f"--tokenizer {spec}: not a model folder")
        template.check_tokenizer(tokenizer)
        return tokenizer, spec
    own = [n for n, s in BUILTINS.items() if s.template == template.name]
    needed = set(template.special_tokens + template.stop_words)
    for name in own + [n for n in BUILTINS if n not in own]:
        spec = BUILTINS[name]
        if not needed <= {*spec.special_tokens, *spec.added_tokens}:
            continue  # not built just to be refused
        tokenizer = load_tokenizer(ensure_builtin(name))
        try:
            template.check_tokenizer(tokenizer)
        except ConfigError:
            continue
        return tokenizer, f"builtin:{name}"
    raise ConfigError(
        f"no built-in model's tokenizer has the special tokens of template '{template.name}': "
        "give --tokenizer PATH (a model folder of that family)"
    )


def _show(args: argparse.Namespace) -> int:
    from ftcore.data.template import get_template

    template = get_template(args.name)
    messages, system, tools = _conversation(args.messages)
    tokenizer, source = _tokenizer(args.tokenizer, template)
    colour = not args.no_color and sys.stdout.isatty()
    mark = (GREEN, RESET) if colour else ("[[", "]]")
    texts = template.render(tokenizer, messages, system, tools)
    ids = template.encode_multiturn(tokenizer, messages, system, tools)
    if template.efficient_eos:  # the eos encode_multiturn adds after the last reply
        texts[-1] = (texts[-1][0], texts[-1][1] + (tokenizer.eos_token or ""))
    trained = sum(len(r) for _, r in ids)
    total = sum(len(p) + len(r) for p, r in ids)
    marked = f"{mark[0]}like this{mark[1]}"
    print(f"template '{template.name}' on the tokenizer of {source}; the trained part is marked {marked}")
    print("--- text ---")
    print("".join(f"{p}{mark[0]}{r}{mark[1]}" for p, r in texts))
    print(f"--- token ids: {total}, {trained} trained (labels), {total - trained} masked (-100) ---")
    for turn, (prompt, response) in enumerate(ids, 1):
        print(f"turn {turn} prompt  : {' '.join(map(str, prompt))}")
        print(f"turn {turn} response: {mark[0]}{' '.join(map(str, response))}{mark[1]}")
    print(
        "(data.train_on_prompt trains the prompts too; data.mask_history trains only the last response)",
    )
    return 0


def handle(args: argparse.Namespace) -> int:
    return _list(args.markdown) if args.template_command == "list" else _show(args)
