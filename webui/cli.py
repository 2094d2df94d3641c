"""`ft webui`: the board's options and its launch (flows/cli.py only adds the subcommand)."""

from __future__ import annotations

import argparse
import os

from ftcore.errors import ConfigError

HELP = "the web board: configure, train, watch, evaluate, chat, export and promote from a browser"
AUTH_ENV = "FTFLOW_WEBUI_AUTH"  # user:password, when --auth is not given


def add_parser(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser("webui", help=HELP, description=HELP)
    cmd.add_argument("--host", default="127.0.0.1", help="bind address (beyond localhost needs --auth)")
    cmd.add_argument("--port", type=int, default=7860)
    cmd.add_argument("--auth", help=f"user:password for a login page (or env {AUTH_ENV})")


def credentials(value: str | None) -> tuple[str, str] | None:
    """(user, password) from --auth or the environment; a value without ':' is an error."""
    value = value or os.environ.get(AUTH_ENV)
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigError(f"--auth / {AUTH_ENV}: expected user:password")
    return user, password


def handle(args: argparse.Namespace) -> int:
    auth = credentials(args.auth)
    if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        raise ConfigError(f"--host {args.host} exposes the board: set --auth user:password (or {AUTH_ENV})")
    try:
        from webui.app import build, launch
    except ImportError as exc:  # gradio is an extra
        raise ConfigError(f"ft webui needs the webui extra: pip install 'ftflow[webui]' ({exc})") from None
    launch(build(), server_name=args.host, server_port=args.port, auth=auth)
    return 0
