"""A serving backend as a child process: start it on a port, wait until /health answers, stop it.

Backend-agnostic: the command line is the only backend-specific part (`serve_command` builds the one
for `ft serve`, which picks the transformers or vLLM backend itself). Blue/green serving runs each
model version this way, behind the front proxy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftcore.errors import ServiceUnavailableError

STOP_GRACE_S = 20.0  # SIGTERM, then SIGKILL: the server lets in-flight requests finish meanwhile


@dataclass
class ServerProcess:
    """A started server: its base URL (no /v1), the key it wants, its process and log file."""

    url: str
    proc: subprocess.Popen
    log_path: Path
    api_key: str | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """Stop the server's whole process group (vLLM has workers); returns its exit status."""
        if self.proc.poll() is None:
            _signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self.proc, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_command(
    model_path: Path,
    name: str,
    port: int,
    log_dir: Path,
    backend: str = "auto",
    max_model_len: int | None = None,
) -> list[str]:
    """`ft serve MODEL_DIR` on 127.0.0.1:`port` (the key comes from FTFLOW_API_KEY, never argv)."""
    cmd = [sys.executable, "-m", "flows.cli", "serve", str(model_path), "--backend", backend]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", name]
    cmd += ["--log-dir", str(log_dir)]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    return cmd


def start_server(
    command: list[str],
    port: int,
    log_path: Path,
    api_key: str | None = None,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = 300.0,
    host: str = "127.0.0.1",
) -> ServerProcess:
    """Run `command` (a server that will listen on host:port) and wait until GET /health is 200.

    stdout and stderr go to `log_path`. A server that exits or is not ready in time is stopped and
    raises ServiceUnavailableError with the end of its log.
    """
    from ftcore.serve.server import API_KEY_ENV, url_of

    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **(env or {})}
    child_env.pop(API_KEY_ENV, None)
    if api_key:
        child_env[API_KEY_ENV] = api_key
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=child_env, start_new_session=True
        )
    server = ServerProcess(url_of(host, port)[: -len("/v1")], proc, log_path, api_key)
    try:
        wait_ready(server, ready_timeout_s)
    except BaseException:
        server.stop(grace_s=5)
        raise
    return server


def wait_ready(server: ServerProcess, timeout_s: float) -> None:
    """Poll /health until it answers 200; the process exiting or the timeout is an error."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if not server.alive():
            raise ServiceUnavailableError(
                f"server exited with status {server.proc.returncode} before it was ready; "
                f"log {server.log_path}:\n{log_tail(server.log_path)}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            tail = log_tail(server.log_path)
            raise ServiceUnavailableError(f"not ready after {timeout_s:.0f} s; {server.log_path}:\n{tail}")
        time.sleep(0.25)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
