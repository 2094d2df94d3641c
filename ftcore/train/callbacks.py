"""Trainer callbacks: progress (terminal line and live records), metrics to a tracker, loss guards."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from ftcore.errors import DivergedError
from ftcore.train import progress

log = logging.getLogger("ftcore.train")


class ProgressCallback(TrainerCallback):
    """One progress line per logging step (bar, step, loss, learning rate, tokens/s, ETA), readable in a
    terminal and in the Prefect log, and the same numbers as a Progress record for live watchers."""

    def __init__(self) -> None:
        self._start = 0.0
        self._start_step = 0
        self._start_tokens = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start = time.monotonic()
        self._start_step = state.global_step
        self._start_tokens = state.num_input_tokens_seen
        if state.global_step:
            log.info("resumed at step %d of %d", state.global_step, state.max_steps)
        else:
            log.info("training for %d steps", state.max_steps)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self._report(state, logs.get("loss"), logs.get("learning_rate"), done=False)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        last = next((e for e in reversed(state.log_history) if "loss" in e), {})
        self._report(state, last.get("loss"), last.get("learning_rate"), done=True)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        log.info("checkpoint saved at step %d", state.global_step)

    def _report(self, state: Any, loss: Any, lr: Any, done: bool) -> None:
        done_steps = state.global_step - self._start_step
        elapsed = time.monotonic() - self._start
        remaining = (state.max_steps - state.global_step) * elapsed / done_steps if done_steps > 0 else None
        tokens = state.num_input_tokens_seen - self._start_tokens
        record = progress.Progress(
            step=state.global_step,
            max_steps=state.max_steps,
            loss=float(loss) if isinstance(loss, (int, float)) else None,
            learning_rate=float(lr) if isinstance(lr, (int, float)) else None,
            epoch=float(state.epoch) if state.epoch is not None else None,
            tokens_per_s=tokens / elapsed if tokens > 0 and elapsed > 0 else None,
            eta_s=0.0 if done else remaining,
            elapsed_s=round(elapsed, 3),
            done=done,
        )
        progress.publish(record)  # listeners in this process (training run in-process)
        # the record rides on the log line, so the train step re-publishes it from the worker's output
        extra = {progress.PROGRESS_FIELD: record.to_dict()}
        log.info("%s%s", "finished " if done else "", record.line(), extra=extra)


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


class StopOnNonFiniteLoss(TrainerCallback):
    """Stop at the first NaN / infinite logged loss, before anything is saved.

    LogAtCheckpoints logs at every checkpoint and the Trainer logs before it saves, so raising here
    keeps every checkpoint on disk one whose steps all had a finite loss; the next run resumes from
    the last good one. (TrainingArguments.logging_nan_inf_filter is off, or the Trainer would hide it.)
    """

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        loss = (logs or {}).get("loss")
        if isinstance(loss, (int, float)) and not math.isfinite(loss):
            raise DivergedError(
                f"training loss became {loss} by step {state.global_step}; the last complete checkpoint "
                "before it is kept. Lower train.learning_rate, keep train.max_grad_norm on, use bf16 "
                "instead of fp16, or check the data for empty / extreme rows"
            )
