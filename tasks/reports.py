"""What a step task shows in the Prefect UI besides its logs: a live progress bar while it trains and,
when it ends, its report (what it did, key numbers, where its output is) and the loss curve."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

from ftcore.artifacts import Artifact
from ftcore.config.pipeline import PipelineConfig
from ftcore.links import mlflow_artifact_url
from ftcore.steps import Step
from ftcore.steps.report import image_data_uri, step_report
from ftcore.train import progress
from tasks.common import artifact_key

log = logging.getLogger("tasks.reports")

UPDATE_EVERY_S = 2.0  # the API is told at most this often; the last record always gets through


class PrefectProgress:
    """A progress listener that keeps one Prefect progress artifact per step run up to date."""

    def __init__(self, key: str, label: str) -> None:
        self.key, self.label = key, label
        self.artifact_id: UUID | None = None
        self._sent = 0.0

    def __call__(self, record: progress.Progress) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        now = time.monotonic()
        if self.artifact_id is not None and not record.done and now - self._sent < UPDATE_EVERY_S:
            return
        percent, description = round(100 * record.fraction, 1), f"{self.label}: {record.line()}"
        if self.artifact_id is None:
            self.artifact_id = create_progress_artifact(percent, key=self.key, description=description)
        else:
            update_progress_artifact(self.artifact_id, percent, description=description)
        self._sent = now


@contextlib.contextmanager
def live_progress(cfg: PipelineConfig, step: Step) -> Iterator[PrefectProgress]:
    """While the step runs, its progress records (training publishes them) move a progress artifact."""
    listener = PrefectProgress(artifact_key(cfg.name, step.name, "progress"), f"{step.name} of {cfg.name}")
    with progress.listening(listener):
        yield listener


def publish_report(cfg: PipelineConfig, step: Step, artifact: Artifact) -> None:
    """The step's report as a markdown artifact keyed `<job>-<step>` (its own page, such as evaluate's
    comparison.md, included), and each plot it made as an image artifact."""
    from prefect.artifacts import create_image_artifact, create_markdown_artifact

    extra = ""
    if step.markdown:
        page = Path(artifact.path) / step.markdown
        extra = page.read_text(encoding="utf-8") if page.is_file() else ""
    what = (step.run.__doc__ or step.name).strip().splitlines()[0]
    create_markdown_artifact(
        markdown=step_report(cfg.name, step.name, what, artifact, extra),
        key=artifact_key(cfg.name, step.name),
        description=f"{step.name} of {cfg.name}: {artifact.path}",
    )
    for title, path in (artifact.metadata.get("plots") or {}).items():
        url = _image_url(artifact.metadata, title, Path(path))
        if url:
            create_image_artifact(
                image_url=url,
                key=artifact_key(cfg.name, title.replace("_", "-")),
                description=f"{title.replace('_', ' ')} of {cfg.name}",
            )


def _image_url(metadata: dict[str, Any], title: str, path: Path) -> str | None:
    """The MLflow server's address of the plot when the run lives on a server, else the PNG inline."""
    uri, run_id = metadata.get("tracking_uri"), metadata.get("mlflow_run_id")
    if uri and run_id:
        served = mlflow_artifact_url(uri, run_id, f"plots/{path.name}")
        if served:
            return served
    return image_data_uri(path)
