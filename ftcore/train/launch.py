"""Starting the training worker process from the train step, and reporting what became of it.

The worker's log records come back on the parent's `ftcore` loggers (so Prefect shows them); a failure
raises the worker's own FtflowError (not retried) or a TrainingProcessError with its last lines; an
interrupt of the parent (Ctrl-C, a SIGTERM turned into an exception) stops the worker first.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

import ftcore
from ftcore.config.sections import DistributedConfig
from ftcore.errors import MEMORY_HINT, FtflowError
from ftcore.processes import child_env, stop_process
from ftcore.train import progress
from ftcore.train.distributed import resolve_distributed
from ftcore.train.job import TrainRequest
from ftcore.train.lock import OutputLock
from ftcore.train.worker import RECORD_PREFIX

log = logging.getLogger("ftcore.train")

REQUEST_FILE = ".ftflow-train-request.json"
ERROR_FILE = ".ftflow-train-error.json"
TAIL_LINES = 40
STOP_GRACE_S = 10.0


class TrainingProcessError(RuntimeError):
    """The training worker crashed or was killed (not a bad input: a retry resumes from a checkpoint)."""


def worker_command(request_path: Path, error_path: Path, dist: DistributedConfig | None = None) -> list[str]:
    """The command that runs training: the worker itself, or torchrun / accelerate launch starting
    nproc_per_node copies of it (`dist` resolved by ftcore.train.distributed.resolve_distributed)."""
    worker = ["-m", "ftcore.train.worker", str(request_path), str(error_path)]
    if dist is None or dist.launcher == "none":
        return [sys.executable, *worker]
    port = dist.master_port or (free_port() if dist.nnodes == 1 else 29500)
    if dist.launcher == "torchrun":
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={dist.nproc_per_node}",
            f"--nnodes={dist.nnodes}",
            f"--node_rank={dist.node_rank}",
            f"--master_addr={dist.master_addr}",
            f"--master_port={port}",
            "--max_restarts=0",  # a failed rank fails the step; the next run resumes from a checkpoint
            *worker,
        ]
    return [  # accelerate launch: the Trainer reads DeepSpeed / FSDP from its own arguments
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        f"--num_processes={dist.nproc_per_node * dist.nnodes}",
        f"--num_machines={dist.nnodes}",
        f"--machine_rank={dist.node_rank}",
        f"--main_process_ip={dist.master_addr}",
        f"--main_process_port={port}",
        # --multi_gpu is accelerate's torchrun path, CPUs included (gloo); its --cpu would need MPI
        *(["--multi_gpu"] if dist.nproc_per_node * dist.nnodes > 1 else []),
        "--module",
        *worker[1:],
    ]


def free_port() -> int:
    """A TCP port nothing listens on now: one-node groups never collide with another job's."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _death_signal() -> Callable[[], None] | None:
    """A preexec_fn for the launcher: the kernel SIGTERMs it when the train step's thread dies, and
    torchrun passes that on to its workers (Linux; elsewhere the workers' own watch covers it). libc is
    looked up here, in the parent, so the forked child runs no import (safe beside other threads)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def worker_env() -> dict[str, str]:
    """The parent's environment, plus: this same ftcore first on the path when it runs from a source
    checkout, unbuffered output, and the parent's pid (the worker exits when that process dies)."""
    env = dict(os.environ)
    root = Path(ftcore.__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():  # never put an installed package's site-packages first
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return child_env(env)  # the worker exits when this process dies


def run_worker(request: TrainRequest, lock: OutputLock | None = None) -> None:
    """Run the request in a worker process and wait for it; raises if it did not finish."""
    out = Path(request.output_dir)
    request_path, error_path = out / REQUEST_FILE, out / ERROR_FILE
    error_path.unlink(missing_ok=True)
    request_path.write_text(request.model_dump_json())
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    dist = resolve_distributed(request.pipeline_config().train.distributed)
    launched = dist.launcher != "none"
    proc = subprocess.Popen(
        worker_command(request_path, error_path, dist),
        preexec_fn=_death_signal() if launched else None,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=worker_env(),
        text=True,
        errors="replace",
    )
    if launched:
        log.info(
            "[train] %s started %d x %d worker processes (launcher pid %d)",
            dist.launcher,
            dist.nnodes,
            dist.nproc_per_node,
            proc.pid,
        )
    else:
        log.info("[train] training in worker process %d", proc.pid)
    if lock is not None:
        lock.note(worker=proc.pid)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            _forward(line.rstrip("\n"), tail)
        code = proc.wait()
    except BaseException:
        stop_worker(proc)
        raise
    if code != 0:
        raise _worker_error(code, error_path, tail)


def stop_worker(proc: subprocess.Popen) -> None:
    """SIGTERM (the worker stops cleanly, checkpoints stay), then SIGKILL after a grace period."""
    if proc.poll() is None:
        log.info("[train] stopping the training worker (pid %d)", proc.pid)
        stop_process(proc, STOP_GRACE_S)


def _forward(line: str, tail: deque[str]) -> None:
    if line.startswith(RECORD_PREFIX):
        try:
            record = json.loads(line[len(RECORD_PREFIX) :])
        except ValueError:
            record = None
        if isinstance(record, dict):
            name = str(record.get("name", ""))
            logger = logging.getLogger(name if name.startswith("ftcore") else "ftcore.train")
            message = str(record.get("msg", ""))
            logger.log(int(record.get("level", logging.INFO)), "%s", message)
            tail.append(message)
            update = progress.from_dict(record.get("progress"))
            if update is not None:
                progress.publish(update)
            return
    if line.strip():
        sys.stderr.write(line + "\n")  # library output, as if it ran in this process
        tail.append(line)


def _worker_error(code: int, error_path: Path, tail: deque[str]) -> Exception:
    try:
        info = json.loads(error_path.read_text())
    except (OSError, ValueError):
        info = None
    if isinstance(info, dict):
        cls = _ftflow_error_class(str(info.get("module", "")), str(info.get("type", "")))
        if cls is not None:
            return cls(info.get("message", ""))
        what = f"{info.get('type')}: {info.get('message')}"
    elif code < 0:
        name = signal.Signals(-code).name
        what = f"killed by {name}"
        if name == "SIGKILL":  # the kernel's out-of-memory killer sends SIGKILL
            what += f" (out of memory? {MEMORY_HINT})"
    else:
        what = f"exit code {code}"
    lines = "\n".join(tail) or "(no output)"
    return TrainingProcessError(f"training worker failed: {what}; its last lines:\n{lines}")


def _ftflow_error_class(module: str, name: str) -> type[FtflowError] | None:
    """The worker's exception class when it is one of ftflow's user errors."""
    if not module.startswith("ftcore"):
        return None
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, FtflowError) else None
