"""Progress lines for long evaluations, at a rate a terminal and the Prefect UI can take."""

from __future__ import annotations

import logging
import time


class Progress:
    """`progress(done, total)` logs "<prefix> done/total" for the first and the last step and at
    most once every `every_s` seconds in between, with the elapsed time and an estimate of the rest."""

    def __init__(self, logger: logging.Logger, prefix: str, every_s: float = 10.0) -> None:
        self.logger, self.prefix, self.every_s = logger, prefix, every_s
        self._start = time.monotonic()
        self._last = -float("inf")

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done not in (1, total) and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = now - self._start
        left = f", ~{elapsed / done * (total - done):.0f} s left" if 0 < done < total else ""
        self.logger.info("%s %d/%d (%.1f s%s)", self.prefix, done, total, elapsed, left)
