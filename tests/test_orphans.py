"""Children never outlive a process that dies without cleaning up (SIGKILL, the OOM killer): a server
started by a blue/green follower, and the training worker, stop on their own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie child of init counts as gone: read its state
        try:
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow  # a real server starts (~15 s quiet)
def test_a_server_stops_when_the_process_that_started_it_is_killed(tmp_path: Path, tiny_llama: Path) -> None:
    starter = (
        "import sys, time\n"
        "from ftcore.serve import start_server\n"
        "h = start_server(sys.argv[1], sys.argv[2], backend='transformers', api_key='k')\n"
        "print(h.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", starter, str(tiny_llama), str(tmp_path / "logs")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        server_pid = int(proc.stdout.readline())
        os.kill(server_pid, 0)  # serving
        proc.kill()  # SIGKILL: no handler, no cleanup in the starter
        proc.wait()
        assert _gone(server_pid, 30), "the server outlived the process that started it"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_die_with_parent_exits_when_the_named_parent_is_already_gone(tmp_path: Path) -> None:
    code = "from ftcore.processes import die_with_parent; die_with_parent(); print('alive')"
    env = {**os.environ, "FTFLOW_PARENT_PID": "1" if os.getppid() != 1 else "2", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 143 and "alive" not in done.stdout
    env.pop("FTFLOW_PARENT_PID")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "alive" in done.stdout
