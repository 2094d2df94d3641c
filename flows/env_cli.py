"""`ft env`: install and list the side virtualenvs (vLLM, quantizers) that ftflow runs as subprocesses."""

from __future__ import annotations

import argparse

ENV_HELP = "install or list the side virtualenvs for vLLM and the quantizers"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    env = sub.add_parser("env", help=ENV_HELP, description=ENV_HELP)
    env_sub = env.add_subparsers(dest="env_command", required=True)
    install = env_sub.add_parser("install", help="create a side virtualenv and install its libraries")
    install.add_argument("names", nargs="+", help="environments to install (see `ft env list`)")
    install.add_argument("--force", action="store_true", help="reinstall even if present")
    env_sub.add_parser("list", help="each side virtualenv, what it is for, and whether it is installed")


def handle(args: argparse.Namespace) -> int:
    from ftcore import venvs

    if args.env_command == "list":
        for name, side in sorted(venvs.SIDE_ENVS.items()):
            state = "installed" if venvs.is_installed(name) else "not installed"
            print(f"{name:14} {state:14} {venvs.python_path(name)}  ({side.purpose})")
        return 0
    for name in args.names:
        venvs.spec(name)  # an unknown name fails before anything is installed
    for name in args.names:
        print(f"installing {name} (log: {venvs.venvs_root() / (name + '-install.log')}) ...", flush=True)
        print(f"{name}: {venvs.install(name, force=args.force)}")
    return 0
