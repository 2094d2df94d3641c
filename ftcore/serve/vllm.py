"""The vLLM backend: vLLM's own OpenAI server, run from its side virtualenv as a child process.

vLLM pins another torch/transformers than ftflow, so it cannot load in this process. `ft serve
--backend vllm` starts `python -m vllm.entrypoints.openai.api_server` with the side environment's
interpreter, waits for its /health, prints the same readiness line as the transformers backend, and
forwards Ctrl-C / SIGTERM to it (then kills it after a grace period). The API key travels in the
child's environment (VLLM_API_KEY), never on its command line nor in a log.

Stop tokens: vLLM reads the model folder's generation_config.json (`--generation-config auto`, its
default) and stops at every eos_token_id listed there (our merge writes the chat template's
end-of-turn ids there), as the transformers backend does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ftcore.errors import ServiceUnavailableError

log = logging.getLogger("ftcore.serve")

KEY_ENV = "VLLM_API_KEY"  # vLLM's server reads its key from here when --api-key is not given
GRACE_S = 10  # after the stop signal, vLLM gets this long before it is killed


def vllm_python(configured: str | None = None) -> Path:
    """vLLM's interpreter: FTFLOW_VLLM_PYTHON, else serve.vllm_python, else the side virtualenv
    (an error saying `ft env install vllm` when none exists)."""
    from ftcore import venvs

    if not os.environ.get("FTFLOW_VLLM_PYTHON") and configured:
        python = Path(configured).expanduser()
        if not python.exists():
            raise venvs.SideEnvError(f"serve.vllm_python: {python} does not exist")
        return python
    return venvs.require("vllm")


def vllm_available(configured: str | None = None) -> bool:
    """Whether serve.backend auto picks vLLM: its interpreter exists."""
    from ftcore import venvs

    if not os.environ.get("FTFLOW_VLLM_PYTHON") and configured:
        return Path(configured).expanduser().exists()
    return venvs.is_installed("vllm")


def free_port(host: str) -> int:
    """A port nothing listens on now (vLLM needs a real port; `--port 0` means: pick one)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host.strip("[]"), 0))
        return sock.getsockname()[1]


def _lora_rank(loras: dict[str, Path]) -> int:
    """The largest adapter rank: vLLM preallocates LoRA slots of --max-lora-rank (one of its sizes)."""
    rank = max(int(json.loads((p / "adapter_config.json").read_text()).get("r", 8)) for p in loras.values())
    return next((size for size in (8, 16, 32, 64, 128, 256, 320, 512) if size >= rank), rank)


def vllm_command(
    python: Path,
    model_path: Path,
    served_name: str,
    loras: dict[str, Path],
    host: str,
    port: int,
    max_model_len: int | None,
    dtype: str,
    trust_remote_code: bool = False,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The vLLM server's command line (no secret in it)."""
    cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path)]
    cmd += ["--host", host, "--port", str(port), "--served-model-name", served_name, "--dtype", dtype]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    if trust_remote_code:
        cmd.append("--trust-remote-code")
    if loras:
        cmd += ["--enable-lora", "--max-loras", str(len(loras)), "--max-lora-rank", str(_lora_rank(loras))]
        cmd += ["--lora-modules", *(f"{name}={path}" for name, path in loras.items())]
    return cmd + list(extra_args or [])


def vllm_env(api_key: str | None, cache_root: Path, kv_cache_gib: float) -> dict[str, str]:
    """The child's environment: ours minus our source path and key, plus vLLM's CPU settings."""
    from ftcore.serve.server import API_KEY_ENV

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", API_KEY_ENV, KEY_ENV)}
    env.update(
        PYTHONNOUSERSITE="1",
        VLLM_HOST_IP=env.get("VLLM_HOST_IP", "127.0.0.1"),
        VLLM_CPU_KVCACHE_SPACE=env.get("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}"),
        VLLM_CACHE_ROOT=str(cache_root),
        VLLM_NO_USAGE_STATS="1",
        VLLM_DO_NOT_TRACK="1",
    )
    if api_key:
        env[KEY_ENV] = api_key
    return env


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    """Poll `url` (/health) until it answers 200; the child dying or the timeout is an error that
    shows the end of its log."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ServiceUnavailableError(
                f"vLLM exited (status {proc.returncode}) before it was ready; "
                f"log: {log_path}\n{_tail(log_path)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(
                f"vLLM did not answer {url} within {timeout_s:.0f} s (serve.ready_timeout_s); "
                f"log: {log_path}\n{_tail(log_path)}"
            )
        time.sleep(0.5)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def stop_process(proc: subprocess.Popen, grace_s: float = GRACE_S) -> int:
    """SIGTERM to the child's process group (vLLM's engine runs in its own processes), SIGKILL after
    `grace_s`; returns its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("vLLM did not stop within %s s: killed", grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group, if any
    return proc.wait()


def _stop_with_parent() -> None:
    """In the child, before exec (Linux): SIGTERM when `ft serve` dies, even killed with SIGKILL, so
    no vLLM server outlives the process that owns it."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def serve_vllm(
    model_path: Path,
    served_name: str,
    loras: dict[str, Path],
    host: str,
    port: int,
    api_key: str | None,
    log_dir: Path,
    serve_cfg: object,
    max_model_len: int | None = None,
    trust_remote_code: bool = False,
    extra_args: list[str] | None = None,
) -> int:
    """Run vLLM's server in the foreground until Ctrl-C / SIGTERM (forwarded to it); 0 on a clean
    stop, an error (with its log's end) when vLLM fails to start or dies."""
    from ftcore.modeling import bf16_supported
    from ftcore.serve.server import announce, url_of

    python = vllm_python(getattr(serve_cfg, "vllm_python", None))
    port = port or free_port(host)
    dtype = "bfloat16" if bf16_supported() else "float32"  # what the transformers backend loads
    args = [*getattr(serve_cfg, "vllm_args", []), *(extra_args or [])]
    cmd = vllm_command(
        python, model_path, served_name, loras, host, port, max_model_len, dtype, trust_remote_code, args
    )
    log_path = log_dir / f"vllm-{time.strftime('%Y%m%d-%H%M%S')}.log"
    cache_root = Path(tempfile.mkdtemp(prefix="vllm-cache-"))
    env = vllm_env(api_key, cache_root, getattr(serve_cfg, "vllm_kv_cache_gib", 2.0))
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    log.info("starting vLLM: %s (log: %s)", " ".join(cmd), log_path)
    try:
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_stop_with_parent,
            )
        try:
            probe_host = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
            health = url_of(probe_host, port).removesuffix("/v1") + "/health"
            timeout = getattr(serve_cfg, "ready_timeout_s", 900.0)
            _wait_or_stop(health, proc, timeout, log_path, stop)
            if stop.is_set():
                log.info("stopped while vLLM was loading")
                return 130
            announce(url_of(host, port), [served_name, *loras])
            while proc.poll() is None and not stop.is_set():
                stop.wait(0.5)
            if not stop.is_set():
                raise ServiceUnavailableError(
                    f"vLLM exited unexpectedly (status {proc.returncode}); log: {log_path}\n{_tail(log_path)}"
                )
            log.info("signal received: stopping vLLM (grace %s s)", GRACE_S)
        finally:
            stop_process(proc)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(cache_root, ignore_errors=True)
    log.info("server stopped")
    return 0


def _wait_or_stop(
    health: str, proc: subprocess.Popen, timeout_s: float, log_path: Path, stop: threading.Event
) -> None:
    """wait_healthy, but a stop signal during loading ends the wait at once."""
    done: dict[str, BaseException | None] = {}

    def wait() -> None:
        try:
            wait_healthy(health, proc, timeout_s, log_path)
            done["error"] = None
        except BaseException as exc:  # handed to the main thread
            done["error"] = exc

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    while waiter.is_alive() and not stop.is_set():
        waiter.join(0.2)
    if not stop.is_set() and done.get("error") is not None:
        raise done["error"]  # type: ignore[misc]
