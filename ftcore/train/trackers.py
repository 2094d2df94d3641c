"""train.report_to: the experiment trackers a run reports to.

MLflow is ftflow's own tracking (the job's run, its registry) and always gets the metrics when named.
TensorBoard and Weights & Biases are the Trainer's own integrations, SwanLab is its package's own
Trainer callback (the one in transformers expects an older swanlab): ftflow only points them at the
run's folder and keeps them off the network unless the user asked for it (wandb offline and swanlab
local by default; set WANDB_MODE=online / SWANLAB_MODE=cloud in the environment to upload).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftcore.config.sections import TRACKERS

INTEGRATIONS = tuple(name for name in TRACKERS if name != "mlflow")  # written by a library, not ftcore
TRAINER_INTEGRATIONS = ("tensorboard", "wandb")  # the Trainer's report_to names


def trainer_integrations(report_to: list[str]) -> list[str] | str:
    """TrainingArguments.report_to: the integrations named, or "none"."""
    chosen = [name for name in TRAINER_INTEGRATIONS if name in report_to]
    return chosen or "none"


def tracker_callbacks(report_to: list[str], out: Path, job: str, project: str) -> list[Any]:
    """Trainer callbacks of the trackers that bring their own (swanlab)."""
    if "swanlab" not in report_to:
        return []
    from swanlab.integration.transformers import SwanLabCallback

    return [
        SwanLabCallback(
            project=os.environ.get("SWANLAB_PROJECT", project),
            experiment_name=job,
            log_dir=str(tracker_dirs(report_to, out)["swanlab"]),
            mode=os.environ.get("SWANLAB_MODE", "local"),
        )
    ]


def tracker_dirs(report_to: list[str], out: Path) -> dict[str, Path]:
    """Where each integration writes, inside the train step's folder."""
    folders = {"tensorboard": out / "tensorboard", "wandb": out / "wandb", "swanlab": out / "swanlog"}
    return {name: folders[name] for name in INTEGRATIONS if name in report_to}


@contextlib.contextmanager
def tracker_environment(report_to: list[str], out: Path, job: str, project: str) -> Iterator[dict[str, Path]]:
    """Set the integrations' environment (folders, offline modes, names) while training runs, then put
    the previous values back; yields tracker_dirs."""
    dirs = tracker_dirs(report_to, out)
    env: dict[str, str] = {}
    user = os.environ
    if "tensorboard" in dirs:
        env["TENSORBOARD_LOGGING_DIR"] = str(dirs["tensorboard"])
    if "wandb" in dirs:
        env["WANDB_DIR"] = str(out)  # wandb adds its own wandb/ folder
        env["WANDB_MODE"] = user.get("WANDB_MODE", "offline")
        env["WANDB_PROJECT"] = user.get("WANDB_PROJECT", project)
        env["WANDB_NAME"] = user.get("WANDB_NAME", job)
        env["WANDB_SILENT"] = user.get("WANDB_SILENT", "true")
    for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield dirs
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
