"""What every step shares: where its artifact goes, how it is keyed, and the job's MLflow run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ftcore import tracking
from ftcore.artifacts import Artifact, read_manifest
from ftcore.config.pipeline import PipelineConfig
from ftcore.outputs import claim_output_dir

log = logging.getLogger("ftcore.steps")


# the config key that chooses each step's folder, named when that folder is refused
CHOSEN_BY = {"train": "train.output_dir", "merged": "export.export_dir", "quantized": "export.export_dir"}


def step_dir(cfg: PipelineConfig, step: str, key: str, chosen: str | None = None) -> Path:
    """Home of a step's artifact: the folder the user chose (train.output_dir, export.export_dir),
    else <workdir>/<step>-<key prefix>, so a new key never overwrites an older result. A chosen
    folder that holds data ftflow did not write is refused (ConfigError), never replaced."""
    if chosen:
        return claim_output_dir(cfg.resolve_path(chosen), CHOSEN_BY.get(step, f"{step} output folder"))
    return cfg.workdir_path / f"{step}-{key[:12]}"


def reuse(directory: Path, key: str, step: str) -> Artifact | None:
    """The finished artifact at `directory` when it was made under the same key."""
    done = read_manifest(directory)
    if done is not None and done.metadata.get("key") == key:
        log.info("[%s] reusing finished artifact %s", step, directory)
        return done
    return None


def section(model: Any, exclude: set[str] | None = None) -> dict[str, Any]:
    """A config section as JSON data for a cache key, minus fields that do not change the result."""
    return model.model_dump(mode="json", exclude=exclude or set())


def check_tracking(cfg: PipelineConfig) -> None:
    """Preflight: the tracking server the job will use answers (only when the job uses MLflow)."""
    if cfg.registry.enabled or "mlflow" in cfg.train.report_to:
        tracking.check_reachable(tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path))


class JobRun:
    """The MLflow run that a job's training and evaluation report to.

    Use it as a context manager around the work of a run it opened: the run ends FINISHED on success,
    FAILED on an error (KILLED on Ctrl-C), so no failure leaves a run RUNNING.
    """

    def __init__(self, cfg: PipelineConfig, run_id: str | None = None) -> None:
        self.cfg = cfg
        self.uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
        self.client = tracking.get_client(self.uri)
        self.experiment_id = tracking.ensure_experiment(
            self.client, cfg.registry.experiment, tracking.default_artifact_root(self.uri)
        )
        self.run_id = run_id

    @classmethod
    def for_key(cls, cfg: PipelineConfig, key: str, tags: dict[str, str]) -> JobRun:
        """Reuse the run started under this key (a resumed training continues its run) or start one."""
        job = cls(cfg)
        job.run_id = tracking.find_run(job.client, job.experiment_id, tracking.KEY_TAG, key)
        if job.run_id is None:
            job.run_id = tracking.start_run(
                job.client,
                job.experiment_id,
                cfg.name,
                {tracking.KEY_TAG: key, "ftflow.job": cfg.name, **tags},
            )
        return job

    def __enter__(self) -> JobRun:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self.run_id is None:
            return
        if exc_type is None:
            self.finish()
        else:
            status = "KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
            try:
                self.finish(status)
            except Exception:  # the store may be what failed: keep the original error
                log.warning("could not mark MLflow run %s %s", self.run_id, status, exc_info=True)

    def params(self, params: dict[str, Any]) -> None:
        tracking.log_params(self.client, self.run_id, params)

    def metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        tracking.log_metrics(self.client, self.run_id, metrics, step)

    def artifacts(self, local_dir: Path, artifact_path: str) -> None:
        tracking.log_artifacts(self.client, self.run_id, local_dir, artifact_path)

    def describe(self, markdown: str) -> None:
        """The run's description (`mlflow.note.content`), which the MLflow UI renders as markdown."""
        self.client.set_tag(self.run_id, "mlflow.note.content", markdown)

    def tag(self, tags: dict[str, str]) -> None:
        """Tags on the run, e.g. the orchestrator's run that produced it (prefect.flow_run_id)."""
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def finish(self, status: str = "FINISHED") -> None:
        tracking.end_run(self.client, self.run_id, status)
