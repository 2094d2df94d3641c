"""`ft promote CFG` and `ft rollback NAME`: the gate and the champion's way back, without Prefect.

Exit codes of `ft promote`: 0 promoted (or already champion), 1 the gate failed, 2 the comparison was
refused (different eval sets, missing scores) or the input is bad. The report goes to stdout, the
reason of a failure to stderr.
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = ("promote", "rollback")


def add_parsers(sub: argparse._SubParsersAction, epilog: str) -> None:
    """The `promote` and `rollback` subcommands."""
    text = "run the promotion gate: the candidate becomes champion when registry.gate passes"
    cmd = sub.add_parser("promote", help=text, description=text, epilog=epilog)
    cmd.add_argument("config", help="YAML config (its registry section names the model, alias and gate)")
    cmd.add_argument("overrides", nargs="*", help="key=value overrides")
    text = "move the champion alias back to the version it pointed to before"
    cmd = sub.add_parser("rollback", help=text, description=text)
    cmd.add_argument("name", help="registered model name (registry.model_name)")
    cmd.add_argument("--to", type=int, default=None, metavar="VERSION", help="this version instead")
    where = cmd.add_mutually_exclusive_group()
    where.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI)")
    where.add_argument("--config", help="take the store from this job's config (its registry / workdir)")


def handle(args: argparse.Namespace) -> int:
    """Run `ft promote` or `ft rollback`; FtflowError is left to the caller (printed, exit 2)."""
    import os

    from flows.cli import _ftcore_to_stderr, _quiet_libraries
    from ftcore.config import load_config
    from ftcore.errors import ConfigError
    from ftcore.promote import FAILED, REFUSED, promote_version, rollback
    from ftcore.tracking import resolve_tracking_uri

    _ftcore_to_stderr()
    _quiet_libraries()
    if args.command == "promote":
        decision = promote_version(load_config(args.config, args.overrides))
        print(decision.report, end="")
        if decision.result in (FAILED, REFUSED):
            print(f"promotion {decision.result}: {decision.reason}", file=sys.stderr)
            return 1 if decision.result == FAILED else 2
        print(decision.reason, file=sys.stderr)
        return 0
    if args.config:
        cfg = load_config(args.config)
        uri = resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    else:
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError(
            "ft rollback: which MLflow store? set MLFLOW_TRACKING_URI, --tracking-uri or --config"
        )
    print(rollback(uri, args.name, args.to).message)
    return 0
