"""`ft serve` and `ft chat`: their options and handlers (flows/cli.py only adds the subcommands)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftcore.serve.target import ServeTarget

SERVE_HELP = "serve a model behind an OpenAI-compatible API (config, models:/NAME@ALIAS or folder)"
CHAT_HELP = "chat with an OpenAI-compatible server from the terminal (lines from stdin)"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help=SERVE_HELP, description=SERVE_HELP)
    serve.add_argument("target", nargs="?", help="config file, models:/NAME@ALIAS, or a model folder")
    serve.add_argument("overrides", nargs="*", help="key=value overrides (config targets)")
    serve.add_argument("--host", help="bind address (default serve.host: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default serve.port: 8000; 0 picks a free one)")
    serve.add_argument("--api-key", help="required Bearer key (prefer FTFLOW_API_KEY: argv is visible)")
    serve.add_argument("--backend", choices=["auto", "transformers", "vllm"], help="serving backend")
    serve.add_argument("--lora", action="append", default=[], metavar="NAME=PATH", help="unmerged adapter")
    serve.add_argument("--served-model-name", help="the base model's name in requests")
    serve.add_argument("--max-model-len", type=int, help="context limit (default: the model's)")
    serve.add_argument("--tracking-uri", help="MLflow tracking URI for models:/ targets")
    serve.add_argument("--log-dir", help="log folder (default: the job's workdir, else FTFLOW_HOME)")
    serve.add_argument(
        "--install", action="store_true", help="install vLLM's side env first (ft env install vllm)"
    )
    serve.add_argument("--enforce-eager", action="store_true", help="vLLM: no graph compile (faster start)")
    serve.add_argument("--vllm-arg", action="append", default=[], metavar="ARG", help="extra vLLM argument")
    serve.add_argument(
        "--follow",
        action="store_true",
        help="serve the alias's version and restart (blue/green) when it moves",
    )
    serve.add_argument("--poll-s", type=float, default=10.0, help="--follow: seconds between registry checks")
    chat = sub.add_parser("chat", help=CHAT_HELP, description=CHAT_HELP)
    chat.add_argument("url", help="server URL, e.g. http://127.0.0.1:8000/v1")
    chat.add_argument("--model", help="model name (default: the server's first)")
    chat.add_argument("--api-key", help="Bearer key (default: FTFLOW_API_KEY)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--max-tokens", type=int, help="answer length limit")
    chat.add_argument("--temperature", type=float, help="0 for greedy")


def serve_command(args: argparse.Namespace) -> int:
    from ftcore.builtin import ftflow_home
    from ftcore.errors import ConfigError
    from ftcore.serve.backend import backend_name
    from ftcore.serve.server import API_KEY_ENV, check_bind, log_to
    from ftcore.serve.target import parse_loras, resolve_target

    if args.install:
        from ftcore import venvs

        print(f"vllm: {venvs.install('vllm')}", flush=True)
        if not args.target:
            return 0
    if not args.target:
        raise ConfigError("ft serve: give a TARGET (config file, models:/NAME@ALIAS or a model folder)")
    from ftcore.processes import die_with_parent

    die_with_parent(use_pdeathsig=False)  # started by a blue/green follower: never outlive it
    target = resolve_target(args.target, args.overrides, args.tracking_uri)
    cfg = target.serve
    host = args.host or cfg.host
    port = cfg.port if args.port is None else args.port
    secret = cfg.api_key.get_secret_value() if cfg.api_key else None
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or secret
    check_bind(host, api_key)
    backend = backend_name(args.backend or cfg.backend, cfg.vllm_python)
    name = args.served_model_name or target.name
    loras = {**target.loras, **parse_loras(args.lora, name)}
    log_dir = Path(args.log_dir or cfg.log_dir or target.log_dir or ftflow_home() / "serve-logs")
    log_file = log_to(log_dir)
    logging.getLogger("ftcore.serve").info(
        "serving %s as '%s' (%s backend); logs in %s", target.model_path, name, backend, log_file
    )
    max_len = args.max_model_len or cfg.max_model_len
    if backend == "vllm":
        from ftcore.serve.vllm import serve_vllm

        extra = [*(["--enforce-eager"] if args.enforce_eager else []), *args.vllm_arg]
        return serve_vllm(
            target.model_path, name, loras, host, port, api_key, log_dir, cfg, max_len,
            target.trust_remote_code, extra,
        )  # fmt: skip
    return _serve_in_process(target, backend, name, loras, host, port, api_key, max_len)


def _serve_in_process(
    target: ServeTarget,
    backend: str,
    name: str,
    loras: dict[str, Path],
    host: str,
    port: int,
    api_key: str | None,
    max_len: int | None,
) -> int:
    """The transformers backend behind ftflow's own OpenAI app, in this process."""
    from ftcore.serve.app import create_app
    from ftcore.serve.backend import pick_backend
    from ftcore.serve.server import announce, run

    backend_cls = pick_backend(backend)
    try:
        served = backend_cls(target.model_path, name, loras, target.trust_remote_code, max_len)
    except KeyboardInterrupt:  # Ctrl-C while loading: nothing to keep, nothing to say about training
        print("interrupted while loading the model", file=sys.stderr)
        return 130
    try:
        app = create_app(served, api_key)
        run(app, host, port, on_ready=lambda url: announce(url, served.model_names()))
    finally:
        served.close()
    logging.getLogger("ftcore.serve").info("server stopped")
    return 0


def chat_command(args: argparse.Namespace) -> int:
    from ftcore.serve.client import ChatClient, ChatError, chat_loop
    from ftcore.serve.server import API_KEY_ENV

    client = ChatClient(args.url, args.api_key or os.environ.get(API_KEY_ENV))
    params = {
        k: v for k, v in (("max_tokens", args.max_tokens), ("temperature", args.temperature)) if v is not None
    }
    try:
        model = args.model or client.first_model()
    except ChatError as exc:
        print(f"error: {exc}")
        return 2
    except Exception as exc:  # httpx connection errors
        from ftcore.errors import ServiceUnavailableError

        raise ServiceUnavailableError(f"chat: the server at {args.url} does not answer: {exc}") from exc
    return chat_loop(client, model, args.system, params)
