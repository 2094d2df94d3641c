"""Live training progress: one record per logging step, for whoever watches the run.

The training worker is a separate process, so progress travels as a field of its log records
(ftcore.train.worker) and the train step re-publishes it here, in the process that runs the step. A
watcher (the Prefect task's progress artifact, a web board) registers with `listening` and never
needs to know where training runs. ftcore stays orchestrator-free: it only calls the listeners.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

log = logging.getLogger("ftcore.train")

PROGRESS_FIELD = "ftflow_progress"  # the LogRecord attribute (logging `extra`) that carries a record
BAR_WIDTH = 20


@dataclass(frozen=True)
class Progress:
    """Where a training run stands after an optimizer step."""

    step: int
    max_steps: int
    loss: float | None = None
    learning_rate: float | None = None
    epoch: float | None = None
    tokens_per_s: float | None = None  # non-padding tokens per second since this session started
    eta_s: float | None = None
    elapsed_s: float = 0.0
    done: bool = False  # the last record of the run

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps > 0 else 0.0

    def line(self) -> str:
        """`step 40/100 [########....] loss 1.2345 lr 1.00e-04 1.2k tok/s eta 00:01:10`: the terminal's
        progress bar, one line per logging step (readable in a log, unlike a redrawn bar)."""
        filled = round(self.fraction * BAR_WIDTH)
        parts = [f"step {self.step}/{self.max_steps} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}]"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.learning_rate is not None:
            parts.append(f"lr {self.learning_rate:.2e}")
        if self.tokens_per_s is not None:
            parts.append(f"{_si(self.tokens_per_s)} tok/s")
        parts.append(f"eta {format_seconds(self.eta_s)}")
        return "  ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


Listener = Callable[[Progress], None]
_listeners: list[Listener] = []


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call `listener` with every Progress published while the block runs (in this process)."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def publish(progress: Progress) -> None:
    """Hand a record to every listener; a failing listener is logged, never fatal to training."""
    for listener in list(_listeners):
        try:
            listener(progress)
        except Exception as exc:
            log.warning("progress listener %r failed: %s", listener, exc)


def from_dict(data: object) -> Progress | None:
    """A Progress from a worker's log record field; None when it is not one."""
    if not isinstance(data, dict):
        return None
    try:
        return Progress(**{k: v for k, v in data.items() if k in Progress.__dataclass_fields__})
    except TypeError:
        return None


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _si(value: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"
