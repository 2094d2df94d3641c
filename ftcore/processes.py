"""Stopping child processes (training workers, servers) the same way everywhere."""

from __future__ import annotations

import subprocess


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
