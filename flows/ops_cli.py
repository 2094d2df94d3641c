"""`ft doctor`: operations commands' options and handlers (flows/cli.py only adds the subcommands)."""

from __future__ import annotations

import argparse

DOCTOR_HELP = "check the environment a job would run in and say how to fix what is wrong"
COMMANDS = ("doctor",)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    doctor = sub.add_parser("doctor", help=DOCTOR_HELP, description=DOCTOR_HELP)
    doctor.add_argument("config", nargs="?", help="a job config: also check its tracking store and workdir")
    doctor.add_argument("overrides", nargs="*", help="key=value overrides")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each server")


def handle(args: argparse.Namespace) -> int:
    """Exit 0 when nothing failed (warnings allowed), 1 when a check failed."""
    from ftcore.config import load_config
    from ftcore.doctor import diagnose

    cfg = load_config(args.config, args.overrides) if args.config else None
    findings = diagnose(cfg, timeout=args.timeout)
    for finding in findings:
        print(finding.line())
    failed = [f for f in findings if f.level == "fail"]
    warned = [f for f in findings if f.level == "warn"]
    print(f"\n{len(findings)} checks: {len(failed)} failed, {len(warned)} warnings")
    return 1 if failed else 0
