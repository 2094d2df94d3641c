"""The serve flow: the current champion behind one stable address, restarted blue/green when it moves.

`serve_champion("cfg.yaml")` (or `"models:/NAME@champion"`, or a bare registered model NAME) starts
the front on serve.host:serve.port, deploys the version the alias points at and polls the registry
every `poll_s` seconds; each move is a `restart` task run (new server, switch, drain, stop the old),
failed in the UI when the new version cannot start, while the old one keeps serving. `ft serve TARGET
--follow` runs it. The flow runs until Ctrl-C, SIGTERM (under `ft serve`) or cancellation; the servers
it started are stopped however it ends.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ftcore.errors import ConfigError, ServiceUnavailableError
from ftcore.serve.bluegreen import Follower, follow_spec, start_front
from tasks.common import ftcore_logs


@task(name="restart", cache_policy=NO_CACHE, persist_result=False)
def restart(follower: Follower, version: int) -> dict[str, Any]:
    """Blue/green to `version`; raises (a failed task run) when it could not start. Old keeps serving."""
    with ftcore_logs():
        event = follower.deploy(version)
    if event["result"] != "serving":
        raise ServiceUnavailableError(f"version {version} did not start: {event['reason']}")
    return event


@flow(name="serve-champion", validate_parameters=False)
def serve_champion(
    target: str,
    overrides: list[str] | None = None,
    tracking_uri: str | None = None,
    poll_s: float = 10.0,
    host: str | None = None,
    port: int | None = None,
    backend: str | None = None,
    max_model_len: int | None = None,
) -> None:
    """Serve the alias's version at host:port and follow the alias, until stopped.

    The API key is never a parameter (parameters show in the UI): FTFLOW_API_KEY or serve.api_key.
    """
    logger = get_run_logger()
    spec = follow_spec(target, overrides, tracking_uri)
    changes = {k: v for k, v in (("backend", backend), ("max_model_len", max_model_len)) if v is not None}
    spec.serve = spec.serve.model_copy(update=changes)
    front, server, url = start_front(spec, host, port)
    follower = Follower(spec, front)
    logger.info("front at %s follows models:/%s@%s", url, spec.model_name, spec.alias)
    announced = False
    try:
        while True:
            try:
                with ftcore_logs():
                    version = follower.pending()
            except Exception as exc:  # the registry is away for a moment: keep serving what we have
                logger.warning("could not read the alias: %s", exc)
                version = None
            if version is not None:
                state = restart(follower, version, return_state=True)
                if state.is_failed():
                    logger.error("%s; still serving %s", state.message, _serving(follower))
            if not announced:
                _announce(url, spec, follower)
                announced = True
            time.sleep(poll_s)
    finally:
        follower.close()
        server.stop()


def _serving(follower: Follower) -> str:
    return f"version {follower.serving.version}" if follower.serving else "nothing"


def _announce(url: str, spec: Any, follower: Follower) -> None:
    """The readiness line of `ft serve`, once the first version is up (or failed, or absent)."""
    where = f"models:/{spec.model_name}@{spec.alias}"
    print(f"ready: {url} serving {_serving(follower)} of {spec.model_name}, following {where}", flush=True)


def follow_command(args: argparse.Namespace) -> int:
    """`ft serve TARGET --follow`: the serve flow, on the configured Prefect API or a temporary one."""
    from flows.cli import _StderrHandler
    from flows.local_server import prefect_api
    from ftcore.serve.server import API_KEY_ENV

    if args.lora or args.served_model_name:
        raise ConfigError("--follow serves each registered version as it is: no --lora / --served-model-name")
    if args.api_key:
        os.environ[API_KEY_ENV] = args.api_key  # read by the front in this process, not a flow parameter
    follow_spec(args.target, args.overrides, args.tracking_uri)  # a bad target fails before Prefect starts
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: the flow's `finally` stops servers
    try:
        with prefect_api():
            # inside the flow, ftcore's lines reach the terminal (and the UI) through Prefect's loggers
            ftcore_log = logging.getLogger("ftcore")
            for handler in [h for h in ftcore_log.handlers if isinstance(h, _StderrHandler)]:
                ftcore_log.removeHandler(handler)
            ftcore_log.propagate = True
            serve_champion(
                args.target,
                args.overrides,
                args.tracking_uri,
                args.poll_s,
                args.host,
                args.port,
                None if args.backend in (None, "auto") else args.backend,
                args.max_model_len,
            )
    except KeyboardInterrupt:
        print("stopped: the front and the model servers are down", file=sys.stderr)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
