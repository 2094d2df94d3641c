"""`ft`: run the whole pipeline as a Prefect flow, or one step directly, LLaMA-Factory style.

ft run CFG [key=value ...]      the finetune flow (fetch, preprocess, train, evaluate, merge, quantize,
                                register, gate: the steps the config turns on)
ft run RECIPE [jobs.J.k=v ...]  a recipe (a `jobs:` file): its jobs as one flow, each taking earlier
                                jobs' models (`job:NAME`), each job's steps cached
ft train CFG [key=value ...]    fetch + preprocess + train, no orchestrator
ft eval CFG [key=value ...]     evaluate the trained (or given) adapter and the base model
ft export CFG [key=value ...]   merge the adapter into the base model (export.export_dir), then
                                quantize it (export.export_quantization_method) and push it to the
                                Hub (export.export_hub_model_id) when those are set
ft promote CFG [key=value ...]  the gate: candidate -> champion when registry.gate passes
ft rollback NAME [--to V]       move champion back to the version it pointed to before
ft config show CFG [...]        print the resolved config
ft config schema                every config field with its description (JSON schema)
ft serve TARGET [options]       OpenAI-compatible server: a config, models:/NAME@ALIAS or a model folder
ft serve TARGET --follow        serve the champion; restart blue/green when it moves (serve flow)
ft chat URL [--model M]         chat with a server from the terminal
ft env install NAME | list      side virtualenvs for vLLM and the quantizers
ft models [--family F] [--tag T] [--search S]   the model catalogue (names for model.name_or_path)
ft doctor [CFG]                 check packages, device, Prefect / MLflow servers, caches, disk
ft deploy CFG [--cron C] [...]  register a scheduled deployment on the Prefect server (work pool)
ft trigger FLOW/NAME [k=v ...]  start a deployed run with overrides [--wait]
ft webui [--host H] [--port P] [--auth user:password]   the web board (browser)

example: ft run configs/quickstart.yaml train.learning_rate=1e-3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from flows import data_cli, env_cli, models_cli, ops_cli, promote_cli, template_cli
from ftcore.errors import FtflowError

EXAMPLES = (
    "overrides use dotted paths: train.learning_rate=2e-4 data.max_samples=100 (or flat LLaMA-Factory keys)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="store_true", help="print the ftflow version and exit")
    sub = parser.add_subparsers(dest="command")
    helps = {
        "run": "run the whole pipeline as one Prefect flow run",
        "train": "fetch, preprocess and train (no Prefect)",
        "eval": "evaluate base and fine-tuned model on the held-out split (no Prefect)",
        "export": "merge the LoRA adapter into the base model, then quantize if a method is set (no Prefect)",
    }
    for name, text in helps.items():
        cmd = sub.add_parser(name, help=text, description=text, epilog=EXAMPLES)
        cmd.add_argument("config", help="YAML config (ftflow sections or LLaMA-Factory flat keys)")
        cmd.add_argument("overrides", nargs="*", help="key=value overrides")
    promote_cli.add_parsers(sub, EXAMPLES)
    config = sub.add_parser("config", help="inspect configs")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the resolved config as YAML", epilog=EXAMPLES)
    show.add_argument("config")
    show.add_argument("overrides", nargs="*")
    config_sub.add_parser("schema", help="print the JSON schema of the config (every field, described)")
    from ftcore.serve.cli import add_parsers

    add_parsers(sub)  # ft serve, ft chat
    env_cli.add_parsers(sub)
    models_cli.add_parsers(sub)
    data_cli.add_parsers(sub)
    template_cli.add_parsers(sub)
    ops_cli.add_parsers(sub)
    _add_webui(sub)
    return parser


def _add_webui(sub: argparse._SubParsersAction) -> None:
    """`ft webui` (the board is a client of flows, so flows only names it here; gradio, the `webui`
    extra, is imported when the command runs and a missing one is a ConfigError saying so)."""
    try:
        from webui.cli import add_parser
    except ImportError:  # an install without the webui package keeps every other command
        return
    add_parser(sub)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged: `main()` may run many times in one
    process (tests, notebooks), each time with its own stderr, and a handler bound to an old, closed
    stream would fail on every line after."""

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _ftcore_to_stderr() -> logging.Handler:
    """Show ftcore's INFO lines (pipeline steps, training progress) on stderr; returns the handler.

    One such handler at most: calling `main()` again does not print every line twice."""
    logger = logging.getLogger("ftcore")
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def _print_artifacts(artifacts: dict[str, Any]) -> None:
    for name, artifact in artifacts.items():
        print(f"{name:<11} {artifact.kind:<10} {artifact.path}")
    evaluation = artifacts.get("eval")
    if evaluation is not None:
        print(json.dumps(evaluation.metadata.get("metrics", {}), indent=2, sort_keys=True))
        comparison = Path(evaluation.path) / "comparison.md"  # base / champion / candidate
        if comparison.is_file():
            print(comparison.read_text(encoding="utf-8"))


def _quiet_libraries() -> None:
    """ftflow prints its own progress; the libraries' bars and deprecation chatter only add noise."""
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        import ftcore

        print(ftcore.__version__)
        return 0
    if not args.command:
        _parser().print_help()
        return 2
    try:
        return _dispatch(args)
    except FtflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: finished steps and the last training checkpoint are kept; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        if argv is None:
            # the `ft` program, not a caller in Python: the flow is marked crashed, the checkpoint is on
            # disk and the temporary server is stopped; skip the interpreter's teardown, whose garbage
            # collection of the model took 16 s after a Ctrl-C on a loaded machine
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130
    except BrokenPipeError:
        # the reader went away (`ft config schema | head`): not an error of ours. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _dispatch(args: argparse.Namespace) -> int:
    from ftcore.config import PipelineConfig, dump_config, load_config

    if args.command == "config":
        if args.config_command == "schema":
            print(json.dumps(PipelineConfig.model_json_schema(), indent=2))
        else:
            from ftcore.config.recipe import is_recipe, load_recipe, recipe_dict

            if is_recipe(args.config):  # every job resolved, references kept as written
                import yaml

                shown = recipe_dict(load_recipe(args.config, args.overrides))
                for job in shown["jobs"].values():
                    job.pop("base_dir", None)
                print(yaml.safe_dump(shown, sort_keys=False), end="")
            else:
                print(dump_config(load_config(args.config, args.overrides)), end="")
        return 0
    if args.command in ops_cli.COMMANDS:
        _quiet_libraries()
        return ops_cli.handle(args)
    if args.command in models_cli.COMMANDS:
        return models_cli.handle(args)
    if args.command in data_cli.COMMANDS:
        _ftcore_to_stderr()
        _quiet_libraries()
        return data_cli.handle(args)
    if args.command in template_cli.COMMANDS:
        _ftcore_to_stderr()
        _quiet_libraries()
        return template_cli.handle(args)
    if args.command == "env":
        _ftcore_to_stderr()
        return env_cli.handle(args)
    if args.command in promote_cli.COMMANDS:
        return promote_cli.handle(args)
    if args.command == "webui":
        from webui.cli import handle

        return handle(args)
    if args.command in ("serve", "chat"):
        from ftcore.serve import cli as serve_cli

        _ftcore_to_stderr()
        _quiet_libraries()
        if args.command == "serve" and args.follow:
            from flows.serve import follow_command

            return follow_command(args)  # the serve flow: blue/green on each move of the alias
        return serve_cli.serve_command(args) if args.command == "serve" else serve_cli.chat_command(args)
    handler = _ftcore_to_stderr()  # before loading: the LLaMA-Factory adapter reports the keys it ignores
    _quiet_libraries()
    if args.command == "run":
        from ftcore.config.recipe import is_recipe

        if is_recipe(args.config):
            return _run_recipe(args, handler)
    cfg = load_config(args.config, args.overrides)
    if args.command == "run":
        from ftcore.steps import preflight

        preflight(cfg)  # before Prefect starts: a bad config fails in milliseconds
        from flows.local_server import prefect_api

        with prefect_api():  # a temporary server, when none is configured, that dies with this process
            from flows.finetune import finetune

            # inside the flow, ftcore's lines reach the terminal (and the UI) through Prefect's task loggers
            logging.getLogger("ftcore").removeHandler(handler)
            logging.getLogger("ftcore").propagate = True

            finetune(cfg)
        return 0
    from ftcore.steps import run_local

    if args.command == "eval":
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"enabled": True})})
    # `ft eval` / `ft export` never train: they take this config's finished training, if any
    until, lookup = {
        "train": ("train", ()),
        "eval": ("evaluate", ("train",)),
        "export": (_export_target(cfg), ("train",)),
    }[args.command]
    _print_artifacts(run_local(cfg, until=until, lookup=lookup))
    return 0


def _run_recipe(args: argparse.Namespace, handler: logging.Handler) -> int:
    """`ft run RECIPE.yaml [jobs.JOB.key=value ...]`: the recipe flow, its jobs checked first."""
    from ftcore.config.recipe import load_recipe
    from ftcore.recipe import check_recipe

    check_recipe(load_recipe(args.config, args.overrides))  # before Prefect starts
    from flows.local_server import prefect_api

    with prefect_api():
        from flows.recipe import recipe

        logging.getLogger("ftcore").removeHandler(handler)
        logging.getLogger("ftcore").propagate = True
        recipe(args.config, args.overrides)
    return 0


def _export_target(cfg: Any) -> str:
    """`ft export` runs up to the last export step the config asks for: push, else quantize, else merge."""
    from ftcore.export import quantizers

    if cfg.export.export_hub_model_id:
        return "push"
    return "quantize" if quantizers.enabled(cfg.export) else "merge"


if __name__ == "__main__":
    sys.exit(main())
