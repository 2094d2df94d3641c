"""Child processes (training workers, servers): stopped the same way everywhere, and never left
running when the process that started them dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

PARENT_ENV = "FTFLOW_PARENT_PID"  # set by the starter: the child exits when that process is gone


def stop_process(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM so it can stop cleanly (checkpoints, logs), then SIGKILL after `grace_s` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for a child started by this process that should die with it."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def die_with_parent(parent: int | None = None, use_pdeathsig: bool = True) -> None:
    """SIGTERM ourselves (a clean stop) when the process named by FTFLOW_PARENT_PID dies, even by
    SIGKILL (or `parent`, when given: a launcher such as torchrun between them). A watcher thread
    covers every system; on Linux the kernel's PR_SET_PDEATHSIG also does,
    at once, for children whose starting thread lives as long as they do (not for servers a
    short-lived thread may start: the kernel signals when that *thread* exits)."""
    raw = os.environ.get(PARENT_ENV)
    if parent is None:
        if not raw:
            return
        parent = int(raw)
    if use_pdeathsig and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before we got here
        os._exit(143)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="ftflow-parent-watch", daemon=True).start()
