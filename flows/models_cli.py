"""`ft models`: list the model catalogue (ftcore/catalog/models.yaml), filtered."""

from __future__ import annotations

import argparse

COMMANDS = ("models",)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    text = "list the model catalogue: names usable as model.name_or_path"
    cmd = sub.add_parser(
        "models",
        help=text,
        description=text,
        epilog="example: ft models --family qwen2.5 --tag Instruct --search coder",
    )
    cmd.add_argument("--family", help="family or its start, case-insensitive (qwen2 gives Qwen2, Qwen2.5)")
    cmd.add_argument(
        "--tag", help="a tag: Base, Chat, Instruct, Thinking, Distill, Math, Coder, VL, MoE, ..."
    )
    cmd.add_argument("--search", help="substring of the name or the repo ids")
    cmd.add_argument(
        "--hub",
        choices=("huggingface", "modelscope"),
        help="whose repo id to show (default: huggingface, modelscope when USE_MODELSCOPE_HUB=1)",
    )


def handle(args: argparse.Namespace) -> int:
    from ftcore.catalog import all_tags, list_models
    from ftcore.hub import hub_choice

    hub = hub_choice(args.hub)
    models = list_models(args.family, args.tag, args.search)
    if not models:
        print(f"no catalogue model matches; tags: {', '.join(all_tags())}")
        return 1
    rows = [("NAME", "FAMILY", "SIZE", "TEMPLATE", "TAGS", hub.upper())]
    rows += [
        (m.name, m.family, m.size or "-", m.template or "-", ",".join(m.tags), m.repo(hub) or "-")
        for m in models
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1])
    print(f"{len(models)} models; use a NAME as model.name_or_path (model.hub picks the hub)")
    return 0
