"""The flow against a real Prefect server (PREFECT_API_URL set), as on a team's shared machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO, stop_group

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def prefect_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = dict(
        os.environ, PREFECT_HOME=str(tmp_path / "server-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false"
    )
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("prefect server did not become healthy: " + (tmp_path / "server.log").read_text()[-2000:])
    try:
        yield url
    finally:
        stop_group(proc)


def test_flow_run_is_recorded_on_the_server(prefect_server: str, tmp_path: Path) -> None:
    env = dict(os.environ, PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "client-home"))
    args = [
        "run",
        "configs/quickstart.yaml",
        f"workdir={tmp_path / 'job'}",
        "train.max_steps=4",
        "data.max_samples=32",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting temporary server" not in result.stdout + result.stderr

    flow_runs = httpx.post(f"{prefect_server}/flow_runs/filter", json={}, timeout=10).json()
    assert [run["state_type"] for run in flow_runs] == ["COMPLETED"]
    task_runs = httpx.post(f"{prefect_server}/task_runs/filter", json={}, timeout=10).json()
    names = sorted(run["name"].rsplit("-", 1)[0] for run in task_runs)
    from ftcore.config import load_config
    from ftcore.steps import plan

    expected = sorted(step.name for step in plan(load_config(REPO / "configs" / "quickstart.yaml", args[2:])))
    assert names == expected
    assert all(run["state_type"] == "COMPLETED" for run in task_runs)
