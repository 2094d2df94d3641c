"""What every ftflow task shares: cache keys from ftcore, ftcore logs in the Prefect UI, retry rules."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from ftcore.artifacts import hash_json
from ftcore.errors import FtflowError


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key from names (job, step, model): lowercase letters, digits and dashes only,
    as Prefect requires; the same names always give the same key, so a later run replaces the card."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def cache_key(step: str, compute: Callable[..., str]) -> Callable[[Any, dict[str, Any]], str | None]:
    """A Prefect cache_key_fn: the step's ftcore key, scoped to the job's workdir.

    Prefect's default policy hashes only the task's source, so a change inside ftcore or in an input
    artifact would not invalidate it; this key moves exactly when the step's result would.
    """

    def key_fn(context: Any, parameters: dict[str, Any]) -> str | None:
        cfg = parameters["cfg"]
        args = [parameters[name] for name in parameters if name != "cfg"]
        try:
            key = compute(cfg, *args)
        except FtflowError:
            return None  # let the task run and report the error itself
        return f"ftflow-{step}-{hash_json([key, str(cfg.workdir_path)])[:32]}"

    return key_fn


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry crashes and transient failures, never a bad config or dataset (it would fail again)."""
    try:
        state.result()
    except FtflowError:
        return False
    except Exception:
        return True
    return False


class _ToPrefect(logging.Handler):
    def __init__(self, logger: Any) -> None:
        super().__init__(logging.INFO)
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        self._logger.log(record.levelno, record.getMessage())


@contextlib.contextmanager
def ftcore_logs() -> Iterator[None]:
    """Show ftcore's log lines (pipeline steps, training progress) in the task's Prefect run log."""
    try:
        handler = _ToPrefect(get_run_logger())
    except MissingContextError:  # called as task.fn() outside a run: plain logging applies
        yield
        return
    root = logging.getLogger("ftcore")
    previous = root.level, root.propagate
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False  # printed once, by the task's logger, not again by the console handler
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.level, root.propagate = previous
