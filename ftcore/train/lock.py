"""One training per output folder: an exclusive lock held by the train step for its whole run."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger("ftcore.train")

LOCK_FILE = ".ftflow-train.lock"


class OutputLock:
    """The held lock; `note` records who holds it (pids) for anyone waiting on it."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle

    def note(self, **fields: object) -> None:
        text = " ".join(f"{k}={v}" for k, v in {"pid": os.getpid(), **fields}.items())
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(text + "\n")
        self._handle.flush()


def holder(directory: Path) -> dict[str, str]:
    """What the lock file says about its holder (pid, worker pid), for messages and tests."""
    try:
        text = (directory / LOCK_FILE).read_text()
    except OSError:
        return {}
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


@contextlib.contextmanager
def output_lock(directory: Path) -> Iterator[OutputLock]:
    """Hold the folder's lock; a second job on the same folder waits here until the first is done.

    flock locks belong to the open file, so jobs in other processes and in other threads of this
    process exclude each other, and the kernel drops the lock when its holder dies (no stale locks).
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(directory).get("pid", "?")
            log.info("[train] %s is in use by another training (pid %s); waiting for it", directory, who)
            fcntl.flock(handle, fcntl.LOCK_EX)
        lock = OutputLock(handle)
        lock.note()
        try:
            yield lock
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
