"""Trainer callbacks: terminal progress (step, loss, ETA) and metrics to a tracker."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

log = logging.getLogger("ftcore.train")


class ProgressCallback(TrainerCallback):
    """One log line per logging step, readable in a terminal and in the Prefect UI."""

    def __init__(self) -> None:
        self._start = 0.0
        self._start_step = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.monotonic()
        self._start_step = state.global_step
        if state.global_step:
            log.info("resumed at step %d of %d", state.global_step, state.max_steps)
        else:
            log.info("training for %d steps", state.max_steps)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        done = state.global_step - self._start_step
        elapsed = time.monotonic() - self._start
        remaining = (state.max_steps - state.global_step) * elapsed / done if done > 0 else math.nan
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if math.isfinite(remaining) else "?"
        log.info(
            "step %d/%d  loss %.4f  lr %.2e  eta %s",
            state.global_step,
            state.max_steps,
            logs["loss"],
            logs.get("learning_rate", float("nan")),
            eta,
        )

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        log.info("checkpoint saved at step %d", state.global_step)


class MetricsCallback(TrainerCallback):
    """Send every logged number to a sink (the MLflow run), keyed by step."""

    def __init__(self, sink: Callable[[dict[str, float], int], None]) -> None:
        self._sink = sink

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs:
            numbers = {f"train/{k}": float(v) for k, v in logs.items() if isinstance(v, (int, float))}
            if numbers:
                self._sink(numbers, state.global_step)


class LogAtCheckpoints(TrainerCallback):
    """Close the loss-logging window at every checkpoint.

    The loss summed since the last log is not saved in a checkpoint, so a run resumed between two
    logging steps would log a mean over fewer steps than the uninterrupted run. Logging whenever a
    checkpoint is written makes the resumed loss history equal the uninterrupted one.
    """

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if control.should_save:
            control.should_log = True
        return control
