"""The board's jobs beyond the form: `ft data check`'s numbers in the Train preview, Start as a run of a
Prefect deployment (a real server and process worker), Stop as its cancellation, and the Evaluate
area scoring a finished job and a registered version beside base and champion."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gradio")

from ftcore.config import PipelineConfig
from ftcore.errors import ConfigError, FtflowError
from tests.helpers import free_port, small_config, stop_group, write_dataset

DEPLOYMENT = "finetune/board"


def _handler(demo: Any, name: str) -> Any:
    return next(f.fn for f in demo.fns.values() if f.name == name)


def _form_args(demo: Any, cfg: PipelineConfig) -> list[Any]:
    from webui.schema import config_to_values

    values = config_to_values(cfg)
    return [values[path] for path in demo.ftflow_form.paths]


def test_train_preview_shows_data_check_stats_and_names_a_bad_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_qwen2: Path
) -> None:
    from webui.app import build

    monkeypatch.setenv("FTFLOW_BOARD_DIR", str(tmp_path / "board"))
    demo = build()
    preview = _handler(demo, "preview")
    cfg = small_config(tmp_path / "w", "data.cutoff_len=32")
    out = preview("English", *_form_args(demo, cfg))
    errors, stats, image = out[0], out[-2], out[-1]
    assert errors == ""
    rows = {line.split("|")[1].strip(): line for line in stats.splitlines() if line.startswith("| demo")}
    assert set(rows) == {"demo_alpaca", "demo_alpaca_eval"}
    cells = [c.strip() for c in rows["demo_alpaca"].split("|")[1:-1]]
    assert cells[1] == "train" and int(cells[2]) == 64 and int(cells[3]) + int(cells[5]) <= 64
    assert int(cells[4]) > 0, "cutoff_len 32 truncates some demo rows"
    p50, p95, top = (int(v) for v in cells[6].split("/"))
    assert 0 < p50 <= p95 <= top
    assert "template `qwen2`" in stats
    assert image["visible"] and image["value"].size[0] > 100  # the histogram, as an image

    (tmp_path / "bad").mkdir()
    write_dataset(tmp_path / "bad", {"bad": {"file_name": "bad.jsonl"}}, {"bad.jsonl": "{x\n"})
    bad = small_config(
        tmp_path / "w", data={"dataset_dir": str(tmp_path / "bad"), "dataset": ["bad"], "eval_dataset": []}
    )
    out = preview("English", *_form_args(demo, bad))
    assert "bad.jsonl: invalid JSON at line 1" in out[0], out[0]  # the form's message names file and row
    marked = out[1 + demo.ftflow_form.paths.index("data.dataset")]
    assert "ft-invalid" in marked["elem_classes"] and "bad.jsonl" in marked["info"]  # on its field
    assert not out[-1]["visible"]


def test_deployment_target_without_a_server_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from webui import flowruns, jobs

    monkeypatch.setenv("FTFLOW_BOARD_DIR", str(tmp_path / "board"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv(flowruns.DEPLOYMENT_ENV, raising=False)
    cfg = small_config(tmp_path / "w")
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert flowruns.target_choices() == [flowruns.LOCAL]
        with pytest.raises(FtflowError, match="PREFECT_API_URL"):
            jobs.start(cfg, deployment=DEPLOYMENT)
        with pytest.raises(ConfigError, match="finetune/NAME"):
            jobs.start(cfg, deployment="nightly")
    assert jobs.list_jobs() == [] and not (tmp_path / "board" / cfg.name).exists()


def test_evaluate_refuses_what_it_cannot_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from webui import evaluate_area, jobs

    monkeypatch.setenv("FTFLOW_BOARD_DIR", str(tmp_path / "board"))
    cfg = small_config(tmp_path / "w")
    with pytest.raises(ConfigError, match="pick a finished job"):
        evaluate_area.start("", [], cfg)
    with pytest.raises(ConfigError, match="no board job named 'nope'"):
        evaluate_area.start("nope", [], cfg)
    with pytest.raises(ConfigError, match="models:/NAME@ALIAS"):
        evaluate_area.start("models:/x@", [], cfg)
    split = cfg.model_copy(update={"data": cfg.data.model_copy(update={"eval_dataset": [], "val_size": 0.1})})
    jobs.save_config(split, jobs.job_config("split"))
    with pytest.raises(ConfigError, match=r"val_size=0\.1"):  # a new eval set would change its training rows
        evaluate_area.start("split", ["demo_alpaca_eval"], cfg)
    assert {"demo_alpaca", "demo_alpaca_eval"} <= set(evaluate_area.eval_set_choices(cfg))


# --- a Prefect server and a process worker (slow: one server for the tests below) ---------------------


def _wait_http(url: str, log: Path, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise AssertionError(f"{url} not ready: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Prefect server, the finetune flow deployed on it ("finetune/board") and a process worker for
    its pool; this process is the board (PREFECT_API_URL set, its own board folder)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import deploy

    root = tmp_path_factory.mktemp("deployed-board")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    server_log, worker_log = root / "server.log", root / "worker.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "PREFECT_HOME": str(root / "server-home")},
        stdout=server_log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    procs = [server]
    try:
        _wait_http(f"{api}/health", server_log, server)
        with pytest.MonkeyPatch.context() as mp, temporary_settings(updates={PREFECT_API_URL: api}):
            mp.setenv("PREFECT_API_URL", api)
            mp.setenv("FTFLOW_BOARD_DIR", str(root / "board"))
            deploy(small_config(root / "deployed", "name=deployed"), name="board")
            worker_env = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(root / "worker-home")}
            worker_env["PREFECT_WORKER_QUERY_SECONDS"] = "2"
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "prefect", "worker", "start", "--pool", "ftflow-process"],
                    env=worker_env,
                    cwd=root,
                    stdout=worker_log.open("wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            yield root
    finally:
        for proc in reversed(procs):
            stop_group(proc)


def _job_config(root: Path, name: str, *overrides: str) -> PipelineConfig:
    return small_config(
        root / name, f"name={name}", "data.max_samples=32", *overrides, registry={"model_name": name}
    )


@pytest.fixture(scope="module")
def finished(board: Path) -> tuple[PipelineConfig, Any]:
    """A 3-step job started by the board as a run of the deployment, waited for."""
    from webui import jobs

    cfg = _job_config(board, "board-job", "train.max_steps=3", "train.logging_steps=1", "train.save_steps=3")
    jobs.start(cfg, deployment=DEPLOYMENT)
    status = jobs.wait("board-job", timeout_s=1200, poll_s=3)
    assert status.state == "completed", f"{status.log_tail}\n{(board / 'worker.log').read_text()[-3000:]}"
    return cfg, status


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_start_is_a_deployment_run_read_back_from_the_server(board: Path, finished: Any) -> None:
    from ftcore import registry, tracking
    from webui import areas, flowruns, jobs

    cfg, status = finished
    assert DEPLOYMENT in flowruns.target_choices()
    meta = json.loads((board / "board" / "board-job" / "job.json").read_text())
    assert meta["deployment"] == DEPLOYMENT and "pid" not in meta  # nothing ran in the board's process
    assert status.prefect_state == "Completed" and status.flow_run == meta["flow_run_name"]
    assert status.flow_run_url.endswith(f"/runs/flow-run/{meta['flow_run_id']}")
    assert (status.step, status.max_steps) == (3, 3) and [s for s, _ in status.losses] == [1, 2, 3]
    # the registered version's run names the flow run; the board links that run
    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    version = registry.get_version_by_alias(tracking.get_client(uri), "board-job", "candidate")
    assert version is not None
    run_tags = tracking.get_client(uri).get_run(version.run_id).data.tags
    assert run_tags["prefect.flow_run_id"] == meta["flow_run_id"]
    assert version.run_id in areas.job_links("board-job", status)
    # a reopened board (nothing in memory) lists the job and reads the same from the server
    flowruns._logs.clear()
    assert "board-job" in jobs.list_jobs()
    again = jobs.status("board-job")
    assert again is not None and again.state == "completed" and again.losses == status.losses
    assert not jobs.stop("board-job")  # finished: nothing to cancel


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_stop_cancels_the_flow_run_and_keeps_the_checkpoint(board: Path, finished: Any) -> None:
    from ftcore.artifacts import read_manifest
    from ftcore.train.checkpoints import last_complete_checkpoint
    from webui import jobs

    steps = ("train.max_steps=4000", "train.save_steps=2", "train.logging_steps=1")
    cfg = _job_config(board, "board-stop", *steps, "eval.enabled=false", "registry.enabled=false")
    jobs.start(cfg, deployment=DEPLOYMENT)
    deadline, step = time.monotonic() + 900, None
    while time.monotonic() < deadline:
        step = next(cfg.workdir_path.glob("train-*"), None)
        if step is not None and last_complete_checkpoint(step / "checkpoints") is not None:
            break
        assert jobs.status("board-stop").state == "running", jobs.status("board-stop").log_tail
        time.sleep(1)
    assert step is not None, (board / "worker.log").read_text()[-3000:]
    assert jobs.stop("board-stop")
    status = jobs.wait("board-stop", timeout_s=180, poll_s=2)
    assert status.state == "stopped" and status.prefect_state == "Cancelled", status.log_tail
    assert last_complete_checkpoint(step / "checkpoints") is not None  # kept for a resume
    assert read_manifest(step) is None  # and not mistaken for a finished training


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_evaluate_a_job_and_a_registered_version_beside_base_and_champion(board: Path, finished: Any) -> None:
    from ftcore import registry, tracking
    from webui import evaluate_area, jobs

    cfg, _ = finished
    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    version = registry.get_version_by_alias(tracking.get_client(uri), "board-job", "candidate")
    registry.set_alias(tracking.get_client(uri), "board-job", registry.CHAMPION, version.version)
    choices = evaluate_area.sources(cfg)
    assert "board-job" in choices and f"models:/board-job/{version.version}" in choices
    assert "models:/board-job@champion" in choices

    tables = {}
    for source in ("board-job", "models:/board-job@champion"):
        name = evaluate_area.start(source, [], cfg)
        status = jobs.wait(name, timeout_s=900, poll_s=2)
        assert status.state == "completed", status.log_tail
        tables[source] = evaluate_area.result(name)
    for source, table in tables.items():
        rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
        head = [c.strip() for c in rows["metric"].split("|")[1:-1]]
        assert head[2] == "base (builtin:tiny-qwen2)" and head[3] == f"champion v{version.version}", head
        loss = [c.strip().strip("*") for c in rows["eval_loss"].split("|")[1:-1]]
        assert all(value not in ("", "n/a") for value in loss[2:]), table  # same eval set: comparable
        if source.startswith("models:/"):
            assert head[4] == f"{source} (v{version.version})"
            # the merged version scores as the adapter it was registered with
            assert float(loss[4]) == pytest.approx(float(loss[3]), rel=2e-2)
        else:
            assert head[4] == "candidate (this job)"
