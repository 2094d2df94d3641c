"""A tiny renderer for the subset of Go's text/template that ftflow's Ollama Modelfiles use.

Ollama renders TEMPLATE with Go's text/template; no Go toolchain is here, so tests render with this:
text, {{ .Field }}, {{ $.Field }}, {{ $var }}, {{ $v := EXPR }}, if / else if / else / end,
{{ range $i, $v := EXPR }}, and the functions eq, or, not, len, slice. Anything else is an error, so
a Modelfile using more than this subset fails its test instead of being rendered wrongly.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_TOKEN = re.compile(r'\(|\)|"(?:[^"\\]|\\.)*"|[^\s()]+')
_FUNCS = {
    "eq": lambda a, b: a == b,
    "or": lambda *args: next((a for a in args if a), args[-1]),
    "not": lambda a: not a,
    "len": len,
    "slice": lambda seq, start: seq[start:],
}


def render(template: str, data: dict[str, Any]) -> str:
    """Render `template` with `data` as the dot (Ollama passes System, Messages[].Role/.Content)."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(template):
        if match.group(1) or match.group(3):
            raise ValueError("whitespace trim markers are not in the supported subset")
        tokens += [("text", template[pos : match.start()]), ("action", match.group(2))]
        pos = match.end()
    tokens.append(("text", template[pos:]))
    nodes, end, terminator = _block(tokens, 0)
    if terminator is not None or end != len(tokens):
        raise ValueError(f"unbalanced template: stray {terminator!r}")
    out: list[str] = []
    _exec(nodes, data, {"$": data}, out)
    return "".join(out)


def _block(tokens: list[tuple[str, str]], i: int) -> tuple[list[tuple], int, str | None]:
    nodes: list[tuple] = []
    while i < len(tokens):
        kind, text = tokens[i]
        i += 1
        if kind == "text":
            nodes.append(("text", text))
        elif text in ("end", "else") or text.startswith("else if "):
            return nodes, i, text
        elif text.startswith("if "):
            branches, otherwise, condition = [], [], text[3:]
            while True:
                body, i, term = _block(tokens, i)
                branches.append((condition, body))
                if term == "else":
                    otherwise, i, term = _block(tokens, i)
                if term == "end":
                    break
                if term is None or not term.startswith("else if "):
                    raise ValueError(f"if without end: {text!r}")
                condition = term[len("else if ") :]
            nodes.append(("if", branches, otherwise))
        elif match := re.fullmatch(r"range \$(\w+), \$(\w+) := (.+)", text):
            body, i, term = _block(tokens, i)
            if term != "end":
                raise ValueError("range without end")
            nodes.append(("range", match.group(1), match.group(2), match.group(3), body))
        elif match := re.fullmatch(r"\$(\w+) := (.+)", text):
            nodes.append(("set", match.group(1), match.group(2)))
        else:
            nodes.append(("print", text))
    return nodes, i, None


def _exec(nodes: list[tuple], dot: Any, variables: dict[str, Any], out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "print":
            out.append(str(_eval(node[1], dot, variables)))
        elif node[0] == "set":
            variables[node[1]] = _eval(node[2], dot, variables)
        elif node[0] == "if":
            for condition, body in node[1]:
                if _eval(condition, dot, variables):
                    _exec(body, dot, variables, out)
                    break
            else:
                _exec(node[2], dot, variables, out)
        elif node[0] == "range":
            for index, item in enumerate(_eval(node[3], dot, variables)):
                _exec(node[4], item, {**variables, node[1]: index, node[2]: item}, out)


def _eval(expr: str, dot: Any, variables: dict[str, Any]) -> Any:
    stack: list[list[Any]] = [[]]
    for token in _TOKEN.findall(expr):
        if token == "(":
            stack.append([])
        elif token == ")":
            inner = stack.pop()
            stack[-1].append(inner)
        else:
            stack[-1].append(token)
    if len(stack) != 1:
        raise ValueError(f"unbalanced parentheses in {expr!r}")
    return _call(stack[0], dot, variables)


def _call(items: list[Any], dot: Any, variables: dict[str, Any]) -> Any:
    head = items[0]
    if isinstance(head, str) and head in _FUNCS:
        return _FUNCS[head](*(_operand(item, dot, variables) for item in items[1:]))
    if len(items) != 1:
        raise ValueError(f"unsupported command {items!r}")
    return _operand(head, dot, variables)


def _operand(item: Any, dot: Any, variables: dict[str, Any]) -> Any:
    if isinstance(item, list):
        return _call(item, dot, variables)
    if item.startswith('"'):
        return json.loads(item)
    if item.isdigit():
        return int(item)
    if item.startswith("$."):
        return variables["$"][item[2:]]
    if item.startswith("$"):
        return variables[item[1:]]
    if item.startswith("."):
        return dot[item[1:]]
    raise ValueError(f"unsupported operand {item!r}")
