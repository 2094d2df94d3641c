"""data.streaming: training reads the tokenized Arrow split in order, a batch of rows at a time
(memory-mapped, never the whole split in memory), and a resumed run starts reading at the row the
checkpoint recorded instead of re-reading from row 0.

The preprocess step already writes the tokenized rows to Arrow files batch by batch, so a stream
needs no other cache: this reader is the train step's view of them. Each checkpoint gets a
`data_position.json` ({"rows": rows consumed}); without one (a checkpoint cut short) the position is
computed from trainer_state.json's global step, the same number for a run whose batch size did not
change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

log = logging.getLogger(__name__)

POSITION_FILE = "data_position.json"
_READ_ROWS = 256


class StreamedRows(torch.utils.data.IterableDataset):
    """The rows of a saved Arrow dataset, in order from row `start` (then from row 0 on each later
    pass), read `_READ_ROWS` at a time."""

    def __init__(self, path: Path, start: int = 0) -> None:
        import datasets

        self.path = Path(path)
        self.rows = len(datasets.load_from_disk(str(self.path)))
        self.start = start % self.rows if self.rows else 0
        self.passes = 0

    def longest(self) -> int:
        """Tokens in the longest row, from the Arrow list offsets only (the rows are not read)."""
        import datasets
        import pyarrow.compute as pc

        column = datasets.load_from_disk(str(self.path)).data.column("input_ids")
        return int(pc.max(pc.list_value_length(column)).as_py() or 0) if self.rows else 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import datasets

        rows = datasets.load_from_disk(str(self.path))  # memory-mapped
        start = self.start if self.passes == 0 else 0
        self.passes += 1
        for first in range(start, self.rows, _READ_ROWS):
            batch = rows[first : min(first + _READ_ROWS, self.rows)]
            names = list(batch)
            for values in zip(*batch.values(), strict=True):
                yield dict(zip(names, values, strict=True))


def rows_per_step(args: Any) -> int:
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)


def resume_position(checkpoint: Path | None, args_rows_per_step: int) -> int:
    """Rows already trained on at `checkpoint`: its data_position.json, else global_step x rows per step."""
    if checkpoint is None:
        return 0
    recorded = Path(checkpoint) / POSITION_FILE
    if recorded.is_file():
        return int(json.loads(recorded.read_text())["rows"])
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return int(state["global_step"]) * args_rows_per_step


class StreamPosition(TrainerCallback):
    """Skips the Trainer's own fast-forward (it would re-read every trained batch) and writes the
    rows consumed into each checkpoint."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.start_step: int | None = None

    def on_init_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        args.ignore_data_skip = True  # the stream itself starts at the recorded row

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start_step = state.global_step

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        done = self.start + (state.global_step - (self.start_step or 0)) * rows_per_step(args)
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            (folder / POSITION_FILE).write_text(json.dumps({"rows": done, "global_step": state.global_step}))


def streamed_train_set(path: Path, cfg: Any, resume_from: Path | None) -> tuple[StreamedRows, StreamPosition]:
    """The train split as a stream starting where `resume_from` stopped, and its callback."""
    from ftcore.train.distributed import world_size

    per_step = cfg.train.per_device_train_batch_size * cfg.train.gradient_accumulation_steps * world_size()
    start = resume_position(resume_from, per_step)
    rows = StreamedRows(path, start)
    log.info("[train] streaming %d rows in order, from row %d", rows.rows, rows.start)
    return rows, StreamPosition(start)
