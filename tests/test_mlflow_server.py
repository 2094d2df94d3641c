"""Where MLflow keeps what a job registers: a real tracking server, a shared sqlite store, many jobs.

No mocks: a real `mlflow server` (sqlite backend, proxied artifact store) started by the test, real
sqlite stores, real processes racing on one fresh store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftcore import tracking
from ftcore.errors import ServiceUnavailableError
from tests.helpers import REPO, free_port, small_config


@pytest.mark.slow
def test_a_job_on_a_server_leaves_the_model_on_the_server(
    mlflow_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run a job from one folder, delete its workdir, then serve the candidate from the server alone."""
    import mlflow
    from mlflow import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftcore.steps import run_local

    url, root = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    job_machine = tmp_path / "job-machine"
    job_machine.mkdir()
    monkeypatch.chdir(job_machine)
    cfg = small_config(job_machine / "job", "train.max_steps=4")
    out = run_local(cfg)

    registered = out["registered"].metadata
    assert registered["tracking_uri"] == url
    assert registered["source"].startswith("mlflow-artifacts:"), registered["source"]
    client = MlflowClient(url)
    run = client.get_run(registered["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert run.info.status == "FINISHED"
    assert not (cfg.workdir_path / "mlartifacts").exists() and not (cfg.workdir_path / "mlflow.db").exists()
    assert [p.name for p in job_machine.iterdir()] == ["job"], "nothing written beside the job"

    shutil.rmtree(cfg.workdir_path)  # the job's machine forgets everything
    serving = tmp_path / "serving-machine"
    local = Path(mlflow.artifacts.download_artifacts("models:/test-model@candidate", dst_path=str(serving)))
    assert (local / "MLmodel").is_file()
    tokenizer = AutoTokenizer.from_pretrained(local / "model")
    model = AutoModelForCausalLM.from_pretrained(local / "model")
    prompt = tokenizer("Hello", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    assert tokenizer.decode(generated[0], skip_special_tokens=True)
    assert list((root / "artifacts").rglob("model.safetensors")), "weights live in the server's store"


def test_unreachable_server_fails_preflight_in_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftcore.steps import preflight

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="not reachable"):
        tracking.check_reachable(dead, timeout=2)
    assert time.monotonic() - start < 10
    tracking.check_reachable(f"sqlite:///{tmp_path}/x.db")  # not a server: nothing to check

    monkeypatch.setenv("MLFLOW_TRACKING_URI", dead)
    with pytest.raises(ServiceUnavailableError, match=dead):
        preflight(small_config(tmp_path / "job"))
    # A job that uses no MLflow at all does not need the server.
    preflight(small_config(tmp_path / "job", "registry.enabled=false", "train.report_to=none"))


def test_a_server_client_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow retries for ~4 minutes by default; ours gives up in seconds (a user's setting wins)."""
    for name in tracking.HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "33")
    tracking.get_client("http://127.0.0.1:9")  # makes no request
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "33"


_RACER = """
import sys, time
from pathlib import Path
import mlflow  # imported before the start signal, so the store is touched by all at once
from ftcore import tracking
uri, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.01)
client = tracking.get_client(uri)
exp = tracking.ensure_experiment(client, "race", tracking.default_artifact_root(uri))
run = tracking.start_run(client, exp, "r", None)
tracking.end_run(client, run)
"""


def test_jobs_starting_together_on_a_fresh_sqlite_store_both_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    for i in range(3):
        cmd = [sys.executable, "-c", _RACER, uri, str(tmp_path / f"ready{i}"), str(go)]
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 240
    while not all((tmp_path / f"ready{i}").exists() for i in range(3)) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n".join(errors)[:4000]
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("race").experiment_id])) == 3


def test_jobs_sharing_one_sqlite_store_keep_artifacts_beside_it(tmp_path: Path) -> None:
    """Deleting the first job's workdir must not take the second job's registered model with it."""
    import mlflow

    from ftcore.steps.register import register
    from tests.test_registry import _model_dir

    shared = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    jobs = [small_config(tmp_path / name, f"registry.tracking_uri={shared}") for name in ("a", "b")]
    done = [register(cfg, _model_dir(cfg.workdir_path / "m", cfg.workdir_path.name), None) for cfg in jobs]
    for reg in done:
        assert reg.metadata["source"].startswith((tmp_path / "store" / "mlartifacts").as_uri())
    shutil.rmtree(jobs[0].workdir_path)
    for i, reg in enumerate(done):
        dst = str(tmp_path / f"download-{i}")
        local = Path(mlflow.artifacts.download_artifacts(reg.metadata["source"], dst_path=dst))
        assert (local / "model" / "model.safetensors").is_file()
