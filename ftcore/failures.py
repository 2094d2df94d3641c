"""What a failed job leaves behind: which step failed and why, where the people who run it look.

The failure goes to the job's MLflow run (the newest run of the job: the one its training or
evaluation reported to) as tags, or to a run of its own when the job failed before any run existed,
and comes back as markdown for the orchestrator's UI. Retrying is the same command or flow run
again: finished steps come from the cache, so the job resumes at the step that failed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ftcore import tracking
from ftcore.config.pipeline import PipelineConfig
from ftcore.steps.common import JobRun

log = logging.getLogger("ftcore.failures")

FAILED_STEP_TAG = "ftflow.failed_step"
ERROR_TAG = "ftflow.error"
FAILED_AT_TAG = "ftflow.failed_at"
ERROR_LIMIT = 4000  # characters of the error kept in the tag (MLflow caps tag values)


@dataclass(frozen=True)
class Failure:
    step: str
    error: str
    run_id: str | None  # the MLflow run that records it (None when tracking itself is what failed)

    def markdown(self, job: str) -> str:
        lines = [
            f"# {job}: failed at step `{self.step}`",
            "",
            "```",
            self.error[:ERROR_LIMIT],
            "```",
            "",
            "Retry the flow run (or run the same `ft run` again): finished steps come from the cache, "
            f"so the job resumes at `{self.step}`.",
        ]
        if self.run_id:
            lines.append(f"MLflow run: `{self.run_id}` (tags `{FAILED_STEP_TAG}`, `{ERROR_TAG}`).")
        return "\n".join(lines)


def record_failure(
    cfg: PipelineConfig, step: str, error: BaseException | str, links: dict[str, str] | None = None
) -> Failure:
    """Tag the job's newest MLflow run (or a new FAILED run) with the failed step and the error.

    Never raises: when MLflow itself is unreachable (maybe the very failure), the failure is logged
    and returned without a run id.
    """
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    if not (cfg.registry.enabled or "mlflow" in cfg.train.report_to):
        return Failure(step, message, None)
    try:
        job = JobRun(cfg)
        run_id = tracking.find_run(job.client, job.experiment_id, "ftflow.job", cfg.name)
        tags = {
            FAILED_STEP_TAG: step,
            ERROR_TAG: message[:ERROR_LIMIT],
            FAILED_AT_TAG: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(links or {}),
        }
        if run_id:
            job.run_id = run_id
            job.tag(tags)
        else:  # failed before training or evaluation opened a run
            run_id = tracking.start_run(
                job.client, job.experiment_id, f"{cfg.name} (failed)", {"ftflow.job": cfg.name, **tags}
            )
            tracking.end_run(job.client, run_id, "FAILED")
    except Exception as exc:  # recording must not hide the original failure
        log.warning("could not record the failure of step %s in MLflow: %s", step, exc)
        return Failure(step, message, None)
    return Failure(step, message, run_id)


def clear_failure(cfg: PipelineConfig, run_id: str) -> None:
    """A run of the job that finished takes the failure tags off its MLflow run: they described an
    earlier attempt (the Prefect failure artifact keeps the history)."""
    client = JobRun(cfg, run_id).client
    present = client.get_run(run_id).data.tags
    for key in (FAILED_STEP_TAG, ERROR_TAG, FAILED_AT_TAG):
        if key in present:
            client.delete_tag(run_id, key)
