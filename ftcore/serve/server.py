"""Running the OpenAI server in this process: bind checks, logs, readiness line, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from ftcore.errors import ConfigError

log = logging.getLogger("ftcore.serve")

API_KEY_ENV = "FTFLOW_API_KEY"
GRACE_S = 10  # in-flight requests get this long after Ctrl-C / SIGTERM


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """An open server beyond this machine would serve anyone: refuse it before loading the model."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(
            f"serve.host: binding to {host} (beyond localhost) needs an API key: "
            f"set serve.api_key, {API_KEY_ENV} or --api-key"
        )


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/v1"


def log_to(log_dir: Path) -> Path:
    """Serving logs (ftflow's and uvicorn's, access lines included) go to a file in `log_dir`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"serve-{time.strftime('%Y%m%d-%H%M%S')}.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in ("ftcore", "uvicorn"):  # uvicorn.error and uvicorn.access propagate to uvicorn
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    return path


def run(app: Any, host: str, port: int, on_ready: Any = None) -> None:
    """Serve until Ctrl-C or SIGTERM (uvicorn's handlers: in-flight requests finish, up to GRACE_S).

    `on_ready(url)` is called once the socket listens (port 0: the port the system picked).
    """
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, timeout_graceful_shutdown=GRACE_S, access_log=True
    )

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # stop gracefully, then return normally: uvicorn's own handler re-raises the signal after
            # the shutdown, which would skip our cleanup and exit as killed. A second Ctrl-C forces it.
            log.info("signal %s: stopping (in-flight requests get %s s)", sig, GRACE_S)
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            self.should_exit = True

    server = Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                break
            await asyncio.sleep(0.05)
        if server.started:
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            if on_ready is not None:
                on_ready(url_of(host, bound))
        await task

    with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind
        asyncio.run(main())
    if not server.started:
        raise ConfigError(
            f"serve: cannot listen on {host}:{port} (in use, or not an address of this machine)"
        )


def announce(url: str, models: list[str]) -> None:
    """The readiness line scripts and tests wait for (stdout, flushed at once)."""
    print(f"ready: {url} serving {', '.join(models)}", flush=True)
    sys.stdout.flush()
