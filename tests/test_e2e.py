"""End to end through the `ft` command, as a user runs it: separate processes, real kills."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ftcore.artifacts import read_manifest
from ftcore.train.checkpoints import last_complete_checkpoint
from tests.helpers import REPO

pytestmark = pytest.mark.slow

FT = [sys.executable, "-m", "flows.cli"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ft(args: list[str], tmp_path: Path, timeout: int = 600, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        FT + args, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout, **kwargs
    )


def test_quickstart_runs_end_to_end_then_from_cache(tmp_path: Path) -> None:
    workdir = tmp_path / "qs"
    first = _ft(["run", "configs/quickstart.yaml", f"workdir={workdir}"], tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    log = first.stdout + first.stderr
    for step in ("fetch_model", "preprocess", "train", "evaluate", "merge", "register"):
        assert f"Task run '{step}" in log
    assert "step 10/" in log and "loss" in log and "eta" in log  # training progress in the terminal
    metrics = json.loads(next(workdir.glob("eval-*/metrics.json")).read_text())
    assert metrics["tuned/eval_loss"] < metrics["base/eval_loss"]

    second = _ft(["run", "configs/quickstart.yaml", f"workdir={workdir}"], tmp_path)
    assert second.returncode == 0
    log = second.stdout + second.stderr
    from ftcore.config import load_config
    from ftcore.steps import plan

    cached = [s.name for s in plan(load_config(REPO / "configs" / "quickstart.yaml")) if s.key is not None]
    assert log.count("Finished in state Cached") == len(cached) == 8  # alias and promote always run
    assert "step 10/" not in log


def test_sigkill_during_training_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    workdir = tmp_path / "killed"
    args = [
        "run",
        "configs/quickstart.yaml",
        f"workdir={workdir}",
        "train.max_steps=400",
        "train.save_steps=25",
    ]
    args += ["train.num_train_epochs=1", "eval.enabled=false", "registry.enabled=false"]
    proc = subprocess.Popen(
        FT + args,
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the flow's temporary Prefect server dies with it, like a lost machine
    )
    deadline = time.monotonic() + 300
    checkpoint = None
    while time.monotonic() < deadline and proc.poll() is None:
        step = next(workdir.glob("train-*"), None)
        checkpoint = step and last_complete_checkpoint(step / "checkpoints")
        if checkpoint is not None and int(checkpoint.name.split("-")[1]) >= 50:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint is not None, "training never wrote a checkpoint"
    step = checkpoint.parent.parent
    assert read_manifest(step) is None, "a killed training must not look finished"
    assert not (step / "model").exists()
    killed_at = int(last_complete_checkpoint(step / "checkpoints").name.split("-")[1])
    assert killed_at < 400

    again = _ft(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert f"resumed at step {killed_at} of 400" in log
    done = read_manifest(step)
    assert done is not None
    assert done.metadata["resumed_from"].endswith(f"checkpoint-{killed_at}")
    assert done.metadata["global_step"] == 400
    assert "Finished in state Cached" in log  # fetch and preprocess came from cache


def _server_pids(port: str) -> list[int]:
    """Processes of the temporary Prefect server listening on `port` (its uvicorn command line)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in cmd and port.encode() in cmd:
            pids.append(int(proc.name))
    return pids


def _start_training(tmp_path: Path) -> tuple[subprocess.Popen, Path, str]:
    """`ft run` in its own session (as a terminal's foreground job), stopped at its first checkpoint;
    returns the process, its log file and the port of its temporary Prefect server."""
    workdir = tmp_path / "job"
    args = ["run", "configs/quickstart.yaml", f"workdir={workdir}", "train.max_steps=4000"]
    args += ["train.save_steps=5", "eval.enabled=false", "registry.enabled=false"]
    log = tmp_path / "ft.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            FT + args,
            cwd=REPO,
            env=_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        step = next(workdir.glob("train-*"), None)
        if step is not None and last_complete_checkpoint(step / "checkpoints") is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, log.read_text()[-3000:]
    port = re.search(r"temporary (?:Prefect )?server on http://127\.0\.0\.1:(\d+)", log.read_text())
    assert port is not None, log.read_text()[-3000:]
    assert _server_pids(port.group(1)), "the temporary Prefect server is not running"
    return proc, step, port.group(1)


def test_ctrl_c_during_training_stops_at_once_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the foreground process group) once hung for minutes after 'Crash detected':
    the temporary server had died of the same signal and Prefect retried reporting to it."""
    proc, step, port = _start_training(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    start = time.monotonic()
    try:
        code = proc.wait(timeout=30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.monotonic() - start
    log = (tmp_path / "ft.log").read_text()
    assert code == 130, log[-3000:]
    assert seconds < 20, f"took {seconds:.1f} s to stop"  # it once hung for minutes; 20 s allows a busy CI
    assert "interrupted: finished steps and the last training checkpoint are kept" in log
    assert last_complete_checkpoint(step / "checkpoints") is not None
    assert read_manifest(step) is None
    assert _server_pids(port) == []
    # the crash is recorded on the job's MLflow run (Prefect's on_crashed hook): which step, and why
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'job' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ftflow").experiment_id])
    tags = runs[0].data.tags
    assert tags.get("ftflow.failed_step") == "train", tags
    assert tags["ftflow.error"].startswith("crashed")


def test_sigkill_of_ft_does_not_orphan_its_prefect_server(tmp_path: Path) -> None:
    proc, _, port = _start_training(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # ft alone: nothing of ours runs to clean up
    proc.wait()
    deadline = time.monotonic() + 10
    while _server_pids(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _server_pids(port)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the temporary Prefect server outlived ft"


def test_llamafactory_flat_yaml_trains_evaluates_and_exports(tmp_path: Path) -> None:
    out = tmp_path / "lf"
    flat = yaml.safe_load((REPO / "configs" / "llamafactory_sft_lora.yaml").read_text())
    flat.update({"output_dir": str(out), "max_steps": 6, "export_dir": str(tmp_path / "exported")})
    path = tmp_path / "lf.yaml"
    path.write_text(yaml.safe_dump(flat))

    trained = _ft(["train", str(path), f"workdir={tmp_path / 'w'}"], tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (out / "model" / "adapter_model.safetensors").is_file()
    assert "ignoring LLaMA-Factory keys" in trained.stderr

    evaluated = _ft(["eval", str(path), f"workdir={tmp_path / 'w'}"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "tuned/eval_loss" in evaluated.stdout

    exported = _ft(["export", str(path), f"workdir={tmp_path / 'w'}"], tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "exported" / "model.safetensors").is_file()

    again = _ft(["train", str(path), f"workdir={tmp_path / 'w'}"], tmp_path)
    assert "reusing finished artifact" in again.stderr
    assert "step 2/" not in again.stderr


def test_help_is_the_manual(tmp_path: Path) -> None:
    result = _ft(["--help"], tmp_path, timeout=60)
    assert result.returncode == 0
    for command in ("run", "train", "eval", "export", "config"):
        assert command in result.stdout
    sub = _ft(["run", "--help"], tmp_path, timeout=60)
    assert "train.learning_rate=2e-4" in sub.stdout
