"""Jobs the board started: each is an `ft` command in its own process (a Prefect flow run for `ft run`),
never work in the web server's process, so it survives a closed browser and a restarted board.

A job's folder under the board directory holds its config (config.yaml), its command and pid
(job.json), its output (log.txt) and, when the board saw it end, its exit code (rc). Reopening the
board lists the jobs from these folders; progress is read back from the log (the train step's
progress lines, the same records its Prefect progress artifact shows) and from MLflow.

With a Prefect server and a finetune deployment chosen, a start is a run of that deployment instead
(webui.flowruns): job.json records its flow_run_id and the board reads state and log from the server.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcore.config import PipelineConfig, dump_config

# `step 40/100 [####....]  loss 1.2345  lr 1.00e-04  1.2k tok/s  eta 00:01:10` (ftcore.train.progress)
_PROGRESS = re.compile(
    r"step (?P<step>\d+)/(?P<max>\d+) \[[#.]*\]\s+(?:loss (?P<loss>[-\d.eE+naif]+))?"
    r".*?(?:(?P<tok>[\d.]+[kM]?) tok/s)?\s+eta (?P<eta>[\d:?]+)"
)
_FLOW_RUN = re.compile(r"Beginning flow run '(?P<name>[^']+)'")
_FLOW_URL = re.compile(r"View at (?P<url>https?://\S+/runs/flow-run/(?P<id>[0-9a-f-]{36}))")
_reaping: set[Path] = set()  # job folders whose process this board waits on (its rc not written yet)


@dataclass
class Status:
    """What a job's folder says about it."""

    name: str
    command: str
    state: str  # running / completed / failed / stopped
    step: int = 0
    max_steps: int = 0
    tokens_per_s: str = ""
    eta: str = ""
    losses: list[tuple[int, float]] = field(default_factory=list)
    flow_run: str = ""
    flow_run_url: str = ""
    log_tail: str = ""
    prefect_state: str = ""  # a deployment run: its Prefect state (Scheduled, Late, Running, ...)
    links: dict[str, str] = field(default_factory=dict)  # a deployment run's link artifacts


def board_dir() -> Path:
    """Where the board keeps its jobs: FTFLOW_BOARD_DIR, default runs/.board under the current folder."""
    return Path(os.environ.get("FTFLOW_BOARD_DIR") or Path("runs") / ".board").absolute()


def _job_dir(name: str) -> Path:
    return board_dir() / name


def save_config(cfg: PipelineConfig, path: Path) -> Path:
    """The config as YAML (what `ft config show` prints), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dump_config(cfg), encoding="utf-8")
    tmp.replace(path)
    return path


def command(verb: str, config_path: Path | str, overrides: list[str] | None = None) -> list[str]:
    """The `ft` command line of a job (shown on the board as the equivalent command)."""
    return ["ft", verb, str(config_path), *(overrides or [])]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own child, not yet reaped) is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def start(
    cfg: PipelineConfig,
    verb: str = "run",
    overrides: list[str] | None = None,
    *,
    deployment: str | None = None,
    name: str | None = None,
    module: str = "flows.cli",
) -> Path:
    """Start `ft VERB CONFIG` for this config in its own session; returns the job's folder.

    `ft run` is the finetune flow as a Prefect flow run: against PREFECT_API_URL when one is set,
    else ft's own temporary server. With `deployment` ("finetune/NAME"), a run of that deployment
    on the configured server instead. `name` is the job's folder (default: the config's name, plus
    the verb when not `run`); `module` the program (`python -m MODULE VERB CONFIG OVERRIDES`). A job
    of the same name still running is refused."""
    from ftcore.errors import ConfigError

    jobdir = _job_dir(name or (cfg.name if verb == "run" else f"{cfg.name}-{verb}"))
    meta = _read_meta(jobdir)
    if meta and _running(meta):
        raise ConfigError(f"job {jobdir.name} is already running; stop it first")
    # inputs as absolute paths: the saved config runs the same from the job's process and from Resume
    data = cfg.data.model_copy(update={"dataset_dir": str(cfg.resolve_input(cfg.data.dataset_dir))})
    cfg = cfg.model_copy(update={"data": data, "workdir": str(cfg.workdir_path)})
    if deployment and verb == "run":
        from webui import flowruns

        run = flowruns.start(deployment, cfg)  # checks server and deployment before writing anything
        config_path = save_config(cfg, jobdir / "config.yaml")
        for stale in ("rc", "stopped"):
            (jobdir / stale).unlink(missing_ok=True)
        meta = {
            "flow_run_id": run.id,
            "flow_run_name": run.name,
            "deployment": deployment,
            "verb": verb,
            "command": f"run_deployment('{deployment}', parameters={{'config': {config_path}}})",
        }
        _write_meta(jobdir, meta)
        return jobdir
    config_path = save_config(cfg, jobdir / "config.yaml")
    for stale in ("rc", "stopped"):
        (jobdir / stale).unlink(missing_ok=True)
    log = open(jobdir / "log.txt", "ab")  # noqa: SIM115 - handed to the child
    shown = command(verb, config_path, overrides) if module == "flows.cli" else None
    shown = shown or ["python", "-m", module, verb, str(config_path), *(overrides or [])]
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(shown)}\n".encode())
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", module, verb, str(config_path), *(overrides or [])]
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env
    )
    log.close()
    meta = {"pid": proc.pid, "verb": verb, "command": " ".join(shown), "module": module}
    _write_meta(jobdir, {**meta, "overrides": list(overrides or [])})
    _reaping.add(jobdir)
    threading.Thread(target=_reap, args=(proc, jobdir), daemon=True).start()
    return jobdir


def resume(name: str) -> Path:
    """Start the job again from its saved config, the way it ran before (a local process or a run of
    the same deployment); finished steps come from the cache, training from its last checkpoint."""
    from ftcore.config import load_config
    from ftcore.errors import ConfigError

    meta = _read_meta(_job_dir(name))
    if meta is None:
        raise ConfigError(f"no board job named {name}")
    cfg = load_config(str(job_config(name)))
    return start(
        cfg,
        meta.get("verb", "run"),
        meta.get("overrides"),
        deployment=meta.get("deployment"),
        name=name,
        module=meta.get("module", "flows.cli"),
    )


def _write_meta(jobdir: Path, meta: dict[str, Any]) -> None:
    tmp = jobdir / ".job.json.tmp"
    tmp.write_text(json.dumps(meta), encoding="utf-8")
    tmp.replace(jobdir / "job.json")


def _reap(proc: subprocess.Popen, jobdir: Path) -> None:
    try:
        (jobdir / "rc").write_text(str(proc.wait()), encoding="utf-8")
    finally:
        _reaping.discard(jobdir)


def stop(name: str) -> bool:
    """Ctrl-C for the job: `ft` stops the training worker cleanly, finished steps and the last
    checkpoint stay, and Resume continues from there. A deployment run is cancelled on its server
    (its worker SIGTERMs it: the same clean stop). False when it was not running."""
    meta = _read_meta(_job_dir(name))
    if not meta or not _running(meta):
        return False
    if "flow_run_id" in meta:
        from webui import flowruns

        if not flowruns.cancel(meta["flow_run_id"]):
            return False
    else:
        os.kill(int(meta["pid"]), signal.SIGINT)
    (_job_dir(name) / "stopped").touch()
    return True


def _running(meta: dict[str, Any]) -> bool:
    if "flow_run_id" not in meta:
        return _alive(int(meta["pid"]))
    from webui import flowruns

    try:
        return flowruns.read_state(meta["flow_run_id"]) not in FINAL_STATES
    except Exception:  # the server does not answer: it may still run there
        return True


def read_meta(name: str) -> dict[str, Any] | None:
    """The job's job.json: its command, pid or flow_run_id, verb and deployment (None: no such job)."""
    return _read_meta(_job_dir(name))


def _read_meta(jobdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((jobdir / "job.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def list_jobs() -> list[str]:
    """The board's jobs, newest first."""
    root = board_dir()
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if (d / "job.json").is_file()]
    return [d.name for d in sorted(dirs, key=lambda d: (d / "job.json").stat().st_mtime, reverse=True)]


def job_config(name: str) -> Path:
    return _job_dir(name) / "config.yaml"


def _state(jobdir: Path, meta: dict[str, Any], text: str) -> str:
    if _alive(int(meta["pid"])) or jobdir in _reaping:  # (ended, its exit code about to be written)
        return "running"
    rc_file = jobdir / "rc"
    if rc_file.is_file():
        rc = rc_file.read_text().strip()
        if rc == "0":
            return "completed"
        return "stopped" if (jobdir / "stopped").is_file() else "failed"
    # the board restarted since: the log's last run says how it ended
    last = text.rsplit("\n=== ", 1)[-1]
    return "completed" if "Finished in state Completed" in last else "ended"


# a deployment run's Prefect state type -> the board's state
FINAL_STATES = {"COMPLETED": "completed", "FAILED": "failed", "CRASHED": "failed", "CANCELLED": "stopped"}


def status(name: str, tail_lines: int = 40) -> Status | None:
    """Where the job stands, from its folder (None when there is no such job)."""
    jobdir = _job_dir(name)
    meta = _read_meta(jobdir)
    if meta is None:
        return None
    if "flow_run_id" in meta:
        return _run_status(name, meta, tail_lines)
    try:
        text = (jobdir / "log.txt").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    current = text.rsplit("\n=== ", 1)[-1]  # this attempt (a resume appends to the log)
    out = Status(name, meta.get("command", ""), _state(jobdir, meta, text))
    _read_progress(out, text, current)
    if found := _FLOW_RUN.search(current):
        out.flow_run = found["name"]
    if found := _FLOW_URL.search(current):
        out.flow_run_url = found["url"]
    out.log_tail = "\n".join(current.splitlines()[-tail_lines:])
    return out


def _read_progress(out: Status, text: str, current: str) -> None:
    """Loss curve (every attempt: steps continue on resume), step, speed and ETA (this attempt)."""
    for match in _PROGRESS.finditer(text):
        step, loss = int(match["step"]), match["loss"]
        if loss and loss not in ("nan", "inf"):
            out.losses = [p for p in out.losses if p[0] < step] + [(step, float(loss))]
    found_all = list(_PROGRESS.finditer(current))
    if found_all:
        last = found_all[-1]
        out.step, out.max_steps = int(last["step"]), int(last["max"])
        out.tokens_per_s, out.eta = last["tok"] or "", last["eta"]


def _run_status(name: str, meta: dict[str, Any], tail_lines: int) -> Status:
    """A deployment run, read from its Prefect server (the curve spans this run: a resume is a new
    run, whose log starts again)."""
    from webui import flowruns

    out = Status(name, meta.get("command", ""), "running", flow_run=meta.get("flow_run_name", ""))
    try:
        run = flowruns.read(meta["flow_run_id"])
    except Exception as exc:  # the server is down or unreachable: say so, keep the board up
        out.state, out.log_tail = "unknown", f"Prefect server: {exc}"
        return out
    out.state = FINAL_STATES.get(run.state_type, "running")
    out.prefect_state, out.flow_run, out.flow_run_url = run.state_name, run.name, run.url
    out.links = run.links
    _read_progress(out, run.log, run.log)
    out.log_tail = "\n".join(run.log.splitlines()[-tail_lines:])
    return out


def wait(name: str, timeout_s: float, poll_s: float = 1.0) -> Status:
    """Block until the job is no longer running (tests, scripts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = status(name)
        if current is None or current.state != "running" or time.monotonic() > deadline:
            return current  # type: ignore[return-value]
        time.sleep(poll_s)
