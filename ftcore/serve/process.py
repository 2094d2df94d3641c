"""Start an OpenAI-compatible server for a target in the background, wait until it answers, stop it.

For callers that manage servers (blue/green deployment, evaluation, benchmarks): the server is `ft
serve` itself in its own process group, whichever the backend (transformers in that process, vLLM
as its child), so what runs is exactly what a user runs. The API key travels in the child's
environment, never on a command line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftcore.errors import ServiceUnavailableError
from ftcore.processes import child_env

STOP_GRACE_S = 30  # `ft serve` gives in-flight requests 10 s, vLLM 10 s more to exit


@dataclass
class ServerHandle:
    """A running server: `url` (ending in /v1), the names it serves, its logs; `stop()` ends it."""

    url: str
    models: list[str]
    process: subprocess.Popen
    log_path: Path  # `ft serve`'s stdout + stderr; the servers' own logs are beside it
    api_key: str | None = field(default=None, repr=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM (graceful: in-flight requests finish), SIGKILL after `grace_s`; the exit status."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(
    target: str | Path,
    log_dir: str | Path,
    backend: str = "auto",
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    loras: dict[str, str | Path] | None = None,
    served_model_name: str | None = None,
    max_model_len: int | None = None,
    extra_args: list[str] | None = None,
    ready_timeout_s: float = 900.0,
) -> ServerHandle:
    """`ft serve TARGET` in the background; returns once it is ready (its readiness line printed and
    /health answering). `port=0` picks a free port. `extra_args` are more `ft serve` options (e.g.
    ["--enforce-eager"], config overrides). A server that fails to start raises
    ServiceUnavailableError with the end of its log (a bad target: the CLI's own message)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "flows.cli", "serve", str(target), "--backend", backend]
    cmd += ["--host", host, "--port", str(port), "--log-dir", str(log_dir)]
    for name, path in (loras or {}).items():
        cmd += ["--lora", f"{name}={path}"]
    if served_model_name:
        cmd += ["--served-model-name", served_model_name]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    cmd += list(extra_args or [])
    from ftcore.serve.server import API_KEY_ENV

    # the server stops (and stops its vLLM) when this process dies, even by SIGKILL
    env = child_env({k: v for k, v in os.environ.items() if k != API_KEY_ENV})
    if api_key:
        env[API_KEY_ENV] = api_key
    log_path = log_dir / f"ft-serve-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.out"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    handle = ServerHandle("", [], proc, log_path, api_key)
    try:
        handle.url, handle.models = _wait_ready(proc, log_path, ready_timeout_s)
    except BaseException:
        handle.stop()  # the full grace: `ft serve` must have time to stop its vLLM child
        raise
    return handle


def _wait_ready(proc: subprocess.Popen, log_path: Path, timeout_s: float) -> tuple[str, list[str]]:
    """The readiness line `ready: URL serving A, B` (see server.announce), then /health answers."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        text = log_path.read_text(errors="replace")
        line = next((ln for ln in text.splitlines() if ln.startswith("ready: ")), None)
        if line:
            url, _, names = line[len("ready: ") :].partition(" serving ")
            health = url.removesuffix("/v1") + "/health"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health.replace("0.0.0.0", "127.0.0.1"), timeout=5).status_code == 200:
                    return url, [n.strip() for n in names.split(",") if n.strip()]
        if proc.poll() is not None:
            tail = "".join(text.splitlines(keepends=True)[-20:])
            raise ServiceUnavailableError(
                f"ft serve exited (status {proc.returncode}); log: {log_path}\n{tail}"
            )
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(f"ft serve was not ready within {timeout_s:.0f} s; log: {log_path}")
        time.sleep(0.3)
