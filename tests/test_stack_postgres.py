"""The deploy/ stack for real, minus Docker: PostgreSQL, the Prefect server and the MLflow server on it,
a process worker, a scheduled deployment that runs on the worker and registers a model version.

Docker is not available on this machine, so the servers run as local processes with exactly the
commands and environment of deploy/docker/compose.yaml (read from the file; host names, ports and
the /data volume replaced by local ones). Test-only speedups: the Prefect scheduler and the worker
poll every few seconds instead of every 60 / 15.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from tests.helpers import free_port, small_config, stop_group

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "deploy" / "docker" / "compose.yaml"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not (PG_BIN / "initdb").exists(), reason="PostgreSQL 15 is not installed (.ci/run installs it)"
    ),
]


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and the postgres server refuse to run as root: run them as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres() -> int:
    root = Path(tempfile.mkdtemp(prefix="ftflow-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    data = root / "data"
    try:
        subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "ftflow", "--auth=trust"]),
            check=True,
            capture_output=True,
        )
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    opts,
                    "-l",
                    str(root / "pg.log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        init = REPO / "deploy" / "docker" / "initdb" / "01-databases.sql"
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "ftflow",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
            ],
            input=init.read_text(),
            text=True,
            check=True,
            capture_output=True,
        )
        yield port
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


class Localizer:
    """Rewrites compose's container addresses, ports and volume paths to this machine's."""

    def __init__(self, ports: dict[int, int], data_dir: Path):
        self.ports, self.data_dir = ports, data_dir

    def __call__(self, text: str) -> str:
        hosts = r"(?:postgres|prefect-server|mlflow|127\.0\.0\.1|localhost|0\.0\.0\.0)"
        text = re.sub(rf"\b{hosts}:(\d+)\b", lambda m: f"127.0.0.1:{self.ports.get(int(m[1]), m[1])}", text)
        text = text.replace("${POSTGRES_PASSWORD:-ftflow}", "ftflow")
        text = re.sub(r"^/data\b", str(self.data_dir), text)
        if text == "0.0.0.0":
            return "127.0.0.1"
        if text.isdigit() and int(text) in self.ports:
            return str(self.ports[int(text)])
        return text

    def service(self, name: str) -> tuple[list[str], dict[str, str]]:
        svc = yaml.safe_load(COMPOSE.read_text())["services"][name]
        argv = [self(str(arg)) for arg in svc["command"]]
        env = {key: self(str(value)) for key, value in (svc.get("environment") or {}).items()}
        return argv, env


def _start(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    bin_dir = Path(sys.executable).parent  # prefect / mlflow / ft of this environment
    full_env = {**os.environ, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.Popen(
        argv, env=full_env, cwd=cwd, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{url}: server exited\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5):
            return
        time.sleep(2)
    raise AssertionError(f"{url} not ready after {timeout} s\n{log.read_text()[-3000:]}")


def _post(url: str, body: dict) -> list | dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _artifacts(api: str, flow_run_id: str) -> dict[str, dict]:
    found = _post(f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    return {a["key"]: a for a in found if a.get("key")}


def _check_links_both_ways(api: str, mlflow_url: str, flow_run_id: str, version) -> None:
    """The flow run shows every step's report, the training progress and loss curve, and links to its
    MLflow run and model version; the MLflow run links back to the flow run's page."""
    from mlflow import MlflowClient

    artifacts = _artifacts(api, flow_run_id)
    for step in ("fetch-model", "preprocess", "train", "evaluate", "merge", "register"):
        assert "**Output**" in artifacts[f"nightly-tiny-{step}"]["data"], step
    progress = artifacts["nightly-tiny-train-progress"]
    assert progress["type"] == "progress" and float(progress["data"]) == 100.0
    assert "2/2" in progress["description"]
    curve = artifacts["nightly-tiny-loss-curve"]["data"]
    assert curve.startswith(f"{mlflow_url}/get-artifact?")
    with urllib.request.urlopen(curve, timeout=30) as resp:  # the image the Prefect UI shows
        assert resp.read(8) == b"\x89PNG\r\n\x1a\n"
    run_link = artifacts["nightly-tiny-mlflow-run"]["data"]  # a link artifact: [text](url)
    assert f"]({mlflow_url}/#/experiments/" in run_link and run_link.endswith(f"/runs/{version.run_id})")
    version_url = f"{mlflow_url}/#/models/nightly-tiny/versions/{version.version}"
    assert artifacts["nightly-tiny-model-version"]["data"].endswith(f"]({version_url})")
    tags = MlflowClient(tracking_uri=mlflow_url).get_run(version.run_id).data.tags
    assert tags["prefect.flow_run_id"] == flow_run_id
    assert tags["prefect.flow_run_url"].endswith(f"/runs/flow-run/{flow_run_id}")


def _job_config(path: Path, workdir: Path) -> None:
    cfg = small_config(
        workdir,
        "name=nightly-tiny",
        "train.max_steps=2",
        "data.max_samples=32",
        eval={"max_samples": 8, "generation_samples": 2, "max_new_tokens": 4},
        registry={"model_name": "nightly-tiny"},
    )
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"base_dir"})))


def _ft(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`ft ARGS` as a client of the stack (its own Prefect home), from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_scheduled_run_on_a_worker_with_postgres_backed_servers(tmp_path):
    from ftcore.config import load_config
    from ftcore.steps import plan

    prefect_port, mlflow_port = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    with postgres() as pg_port:
        local = Localizer({5432: pg_port, 4200: prefect_port, 5000: mlflow_port}, tmp_path / "data")
        api = f"http://127.0.0.1:{prefect_port}/api"
        try:
            argv, env = local.service("prefect-server")
            assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
            env.update(
                PREFECT_HOME=str(tmp_path / "prefect-server"),
                PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5",
            )
            procs.append(_start(argv, env, tmp_path / "prefect.log", tmp_path))
            argv, env = local.service("mlflow")
            assert any(a.startswith("postgresql://") for a in argv)
            procs.append(_start(argv, env, tmp_path / "mlflow.log", tmp_path))
            _wait_http(f"{api}/health", procs[0], tmp_path / "prefect.log")
            _wait_http(f"http://127.0.0.1:{mlflow_port}/health", procs[1], tmp_path / "mlflow.log")

            argv, env = local.service("worker")
            assert (
                env["PREFECT_API_URL"] == api
                and env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{mlflow_port}"
            )
            env.update(PREFECT_HOME=str(tmp_path / "prefect-worker"), PREFECT_WORKER_QUERY_SECONDS="5")
            client_env = {
                k: v for k, v in env.items() if k.startswith(("PREFECT_API", "MLFLOW", "FTFLOW", "HF_"))
            }
            cfg_path, workdir = tmp_path / "nightly.yaml", tmp_path / "job"
            _job_config(cfg_path, workdir)
            # ahead of the time `ft deploy` takes on a loaded machine (a slot in the past is skipped)
            start_at = datetime.now(timezone.utc) + timedelta(seconds=120)
            client_env["PREFECT_HOME"] = str(tmp_path / "prefect-client")
            args = ["deploy", str(cfg_path), "--name", "nightly", "--interval", "86400"]
            deploy = _ft([*args, "--start-at", start_at.isoformat()], client_env, 300)
            assert deploy.returncode == 0, deploy.stderr + deploy.stdout
            assert "finetune/nightly" in deploy.stdout
            procs.append(_start(argv, env, tmp_path / "worker.log", tmp_path))

            deployment = _post(f"{api}/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}})[
                0
            ]
            limit = (deployment.get("global_concurrency_limit") or {}).get(
                "limit", deployment.get("concurrency_limit")
            )
            assert limit == 1
            run = None
            deadline = time.monotonic() + 1200
            while time.monotonic() < deadline:
                runs = _post(
                    f"{api}/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}
                )
                finished = [
                    r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                ]
                if finished:
                    run = finished[0]
                    break
                time.sleep(5)
            assert run is not None, (tmp_path / "worker.log").read_text()[-4000:]
            assert run["state_type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
            # it ran on the schedule, not before it
            assert datetime.fromisoformat(run["start_time"]) >= start_at - timedelta(seconds=1)

            task_runs = _post(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
            names = sorted({t["name"].rsplit("-", 1)[0] for t in task_runs})
            steps = sorted({step.name for step in plan(load_config(cfg_path))})
            assert names == steps and all(t["state_type"] == "COMPLETED" for t in task_runs)

            from mlflow import MlflowClient

            from ftcore.registry import download

            mlflow_url = f"http://127.0.0.1:{mlflow_port}"
            version = MlflowClient(tracking_uri=mlflow_url).get_model_version_by_alias(
                "nightly-tiny", "candidate"
            )
            got = download(mlflow_url, "nightly-tiny", "candidate", tmp_path / "dl")
            files = {p.name for p in Path(got).rglob("*")}
            assert "config.json" in files and any(f.endswith(".safetensors") for f in files)

            _check_links_both_ways(api, mlflow_url, run["id"], version)

            # a triggered run with an override, waited for: its state and version come back
            args = ["trigger", "finetune/nightly", "train.logging_steps=1", "--wait", "--timeout", "900"]
            trigger = _ft(args, client_env, 1000)
            assert trigger.returncode == 0, trigger.stdout + trigger.stderr
            result = json.loads(trigger.stdout[trigger.stdout.index("{") :])
            assert result["state"] == "Completed" and int(result["registered_version"]) == int(
                version.version
            )
        finally:
            for proc in reversed(procs):
                stop_group(proc)
