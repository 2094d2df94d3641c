"""train: step x method -> an adapter or a full model, resumable from the last complete checkpoint.

Layout of the step directory: checkpoints/ (the Trainer's, kept across kills so a restart resumes),
model/ (the final weights, renamed into place when complete) and the manifest, written last.
The step itself keys the run, holds the folder's lock (.ftflow-train.lock: a second job on the same
folder waits, then reuses or refuses), and launches a worker process (ftcore.train.launch) that writes
model/ and the manifest, which the step reads back before pruning old checkpoints.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ftcore.artifacts import Artifact, read_manifest
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError
from ftcore.outputs import TRAIN_KEY_FILE
from ftcore.steps.common import reuse, step_dir
from ftcore.steps.keys import train_key

log = logging.getLogger("ftcore.steps")

KEY_FILE = TRAIN_KEY_FILE


def train(cfg: PipelineConfig, model: Artifact, data: Artifact) -> Artifact:
    """Fine-tune the base model on the tokenized data; reuse a finished run with the same key."""
    from ftcore.train.checkpoints import prune_checkpoints, resolve_resume
    from ftcore.train.job import TrainRequest
    from ftcore.train.launch import TrainingProcessError, run_worker
    from ftcore.train.lock import output_lock

    key = train_key(cfg, model, data)
    out = step_dir(cfg, "train", key, cfg.train.output_dir)
    done = reuse(out, key, "train")
    if done is not None:
        return done
    with output_lock(out) as lock:
        done = reuse(out, key, "train")  # the job we waited for may have made exactly this
        if done is not None:
            return done
        _claim(out, key)
        checkpoints = out / "checkpoints"
        resume_from = resolve_resume(cfg.train.resume_from_checkpoint, checkpoints)
        if resume_from:
            log.info("[train] resuming from %s", resume_from)
        run_worker(TrainRequest.build(cfg, model, data, key, out, resume_from), lock)
        artifact = read_manifest(out)
        if artifact is None or artifact.metadata.get("key") != key:
            raise TrainingProcessError(f"the training worker exited without writing {out}'s manifest")
        for pruned in prune_checkpoints(checkpoints, cfg.train.keep_checkpoints):
            log.info("[train] removed %s (train.keep_checkpoints=%d)", pruned, cfg.train.keep_checkpoints)
    return artifact


def _claim(out: Path, key: str) -> None:
    """Refuse to mix checkpoints of a different config into this run's output_dir."""
    out.mkdir(parents=True, exist_ok=True)
    marker = out / KEY_FILE
    if marker.is_file() and marker.read_text().strip() != key:
        if any((out / "checkpoints").glob("checkpoint-*")) or (out / "model").exists():
            raise ConfigError(
                f"train.output_dir {out} holds a run with a different config; choose a new output_dir "
                "or delete that folder"
            )
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    marker.write_text(key)
