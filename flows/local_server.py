"""The temporary Prefect server `ft run` uses when no PREFECT_API_URL is set, owned by ft itself.

Prefect's own ephemeral server runs in ft's process group, so Ctrl-C in a terminal kills it at once;
the flow engine then retries reporting "Crashed" to the dead server for minutes. And a SIGKILL of ft
leaves it running forever. This one runs in its own session (a terminal's Ctrl-C reaches only ft),
asks the kernel to SIGTERM it when ft dies (PR_SET_PDEATHSIG, Linux), and is stopped when the flow
ends, however it ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ftcore.errors import FtflowError
from ftcore.processes import stop_process

STARTUP_TIMEOUT_S = 180.0  # a first start on a loaded machine took 78 s; Prefect's default is 20 s
STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1


def configured_api_url() -> str | None:
    """The Prefect API this process would use (env or the active profile), None for ephemeral mode."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The configured Prefect API, else a temporary server started for the block and stopped after."""
    configured = configured_api_url()
    if configured:
        yield configured
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proc, url = _start()
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url  # for child processes (training, task runners)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
            # Prefect's background threads (log and event workers) read the process-wide settings
            # when their context has none: point those at this server too, as Prefect's own test
            # harness does, or they would start an ephemeral server of their own.
            import prefect.context

            global_settings = getattr(prefect.context, "_temporary_global_settings_context", None)
            if global_settings is not None:
                stack.enter_context(global_settings(prefect.context.get_settings_context()))
            try:
                yield url
            finally:
                _drain_workers()
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        stop(proc)


def _drain_workers() -> None:
    """Send the logs and events still queued while the server is up; after it stops they would be
    retried against a closed port for a minute at exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=STOP_TIMEOUT_S)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when this process dies (Linux only).

    prctl is looked up here, before the fork: the child may only call what is already loaded.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _server_command(port: int) -> list[str]:
    """The command Prefect's own ephemeral server runs (prefect.server.api.server.SubprocessASGIServer)."""
    import prefect

    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(prefect.__file__).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


def _server_env() -> dict[str, str]:
    from prefect.settings import get_current_settings

    return {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }


def _startup_timeout() -> float:
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as SETTING

    return max(float(SETTING.value()), STARTUP_TIMEOUT_S)


def _start(attempts: int = 3) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    for _ in range(attempts):
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        print(
            f"starting a temporary Prefect server on {url} (set PREFECT_API_URL to use one that stays)",
            file=sys.stderr,
        )
        proc = subprocess.Popen(
            _server_command(port),
            env=_server_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(),  # calls only prctl, resolved before the fork
        )
        deadline = time.monotonic() + _startup_timeout()
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        return proc, url
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        except BaseException:
            stop(proc)
            raise
        if proc.poll() is None:
            stop(proc)
            raise FtflowError(
                f"the temporary Prefect server did not answer within {_startup_timeout():.0f} s; "
                "start one (`prefect server start`) and set PREFECT_API_URL"
            )
        # exited early: most often the port was taken between choosing and binding it; try another
    raise FtflowError(f"the temporary Prefect server exited at start (code {proc.returncode})")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a few seconds; never leaves the server behind."""
    stop_process(proc, STOP_TIMEOUT_S)
