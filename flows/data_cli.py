"""`ft data check CFG`: every dataset of a job validated and measured before training (ftcore.datacheck)."""

from __future__ import annotations

import argparse
import json

COMMANDS = ("data",)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    text = "inspect a job's datasets"
    data = sub.add_parser("data", help=text, description=text)
    data_sub = data.add_subparsers(dest="data_command", required=True)
    text = (
        "validate every dataset of CFG and print, per dataset: rows, kept, truncated, dropped and why, and "
        "the token lengths (p50 / p95 / max) of prompt and response under the job's template"
    )
    check = data_sub.add_parser(
        "check",
        help=text,
        description=text,
        epilog="example: ft data check examples/qwen_lora_sft.yaml data.on_error=skip --image lengths.png",
    )
    check.add_argument("config", help="YAML config (ftflow sections or LLaMA-Factory flat keys)")
    check.add_argument("overrides", nargs="*", help="key=value overrides")
    check.add_argument(
        "--image", help="token-length histogram PNG (default: <workdir>/data_check/lengths.png)"
    )
    check.add_argument("--json", action="store_true", help="print the counts as JSON instead")


def handle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ftcore.config import load_config
    from ftcore.datacheck import check_data, format_check

    cfg = load_config(args.config, args.overrides)
    image = Path(args.image) if args.image else cfg.workdir_path / "data_check" / "lengths.png"
    checks = check_data(cfg, image)
    if args.json:
        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        for check in checks:
            print("\n".join(format_check(check)))
        print(f"histogram: {image}")
    return 0 if all(c.kept for c in checks) else 1
