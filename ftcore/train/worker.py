"""The training worker process: `python -m ftcore.train.worker <request.json> <error.json>`.

Started by the train step (ftcore.train.launch). Its log records go to stdout as one JSON object per
line, which the parent re-emits on its own `ftcore` loggers; anything else a library prints passes
through as plain text. On failure it writes the exception's class and message to <error.json>, so
the parent raises the same FtflowError (a bad input is not retried) or a crash error with the tail.
Under torchrun every rank runs this same module (rank 0 logs at INFO, the others at WARNING) and
watches its launcher instead of the train step. It exits when the parent dies, and turns SIGTERM
into a clean stop (the MLflow run is marked KILLED; the last complete checkpoint stays for the next
resume).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from ftcore.processes import die_with_parent
from ftcore.train.progress import PROGRESS_FIELD

RECORD_PREFIX = "\x1eftflow-log "  # marks a log record line in the worker's output


class _RecordFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        data = {"level": record.levelno, "name": record.name, "msg": message}
        progress = getattr(record, PROGRESS_FIELD, None)
        if progress is not None:
            data["progress"] = progress
        return RECORD_PREFIX + json.dumps(data)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_RecordFormatter())
    root = logging.getLogger("ftcore")
    root.handlers[:] = [handler]
    # in a torchrun group rank 0 tells the story; the others only report problems
    root.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
    root.propagate = False


def _stop(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    request_path, error_path = Path(argv[0]), Path(argv[1])
    signal.signal(signal.SIGTERM, _stop)
    # never outlive the train step; under torchrun / accelerate, live and die with that launcher
    die_with_parent(os.getppid() if "LOCAL_RANK" in os.environ else None)
    _setup_logging()
    try:
        from ftcore.train.job import TrainRequest, run_training

        run_training(TrainRequest.model_validate_json(request_path.read_text()))
    except BaseException as exc:
        error = {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc)}
        error_path.write_text(json.dumps(error))
        if not isinstance(exc, Exception):
            raise
        from ftcore.errors import FtflowError

        if not isinstance(exc, FtflowError):  # a crash: its traceback; a bad input: just the message
            logging.getLogger("ftcore.train").error("training failed", exc_info=exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
