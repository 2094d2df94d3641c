"""Datasets named in a LLaMA-Factory `dataset_info.json`, read into normalized rows.

Rows are normalized by ftcore.data.converter (its docstring has the row's shape). Every row is
validated here, in plain Python and before any tokenization, for the data kind the stage needs
(ftcore.data.processor.STAGE_DATA), and every error names the file and row (or line).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcore.data.converter import converter
from ftcore.data.sources import Source, Unreadable, read_json, read_records, resolve_source, source_key
from ftcore.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATASET_INFO = "dataset_info.json"
FORMATTINGS = ("alpaca", "sharegpt", "openai")
# columns LLaMA-Factory reads for multimodal models; text-only training ignores them, with a note
MEDIA_COLUMNS = ("images", "videos", "audios")
ON_ERROR = ("error", "skip")


@dataclass
class RowStats:
    """What reading a dataset did with its rows: read, kept, skipped (bad rows under
    data.on_error: skip) by reason with the first location of each, and kept rows with nothing
    to learn from (`empty`)."""

    read: int = 0
    kept: int = 0
    empty: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.first.setdefault(reason, where)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": self.kept,
            "empty_response": self.empty,
            "skipped": sum(self.skipped.values()),
            "skipped_by_reason": dict(self.skipped),
            "first_skipped": dict(self.first),
        }


def _read_records(path: Path) -> Iterator[tuple[str, Any]]:
    return read_records(path)


def load_dataset_info(dataset_dir: Path) -> dict[str, dict[str, Any]]:
    """Parse `dataset_dir/dataset_info.json`; its absence or bad JSON is an error naming the file."""
    path = Path(dataset_dir) / DATASET_INFO
    if not path.is_file():
        raise ConfigError(f"no {DATASET_INFO} in dataset_dir {dataset_dir} (expected {path})")
    info = read_json(path)
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected an object mapping dataset names to entries")
    return info


def dataset_entry(dataset_dir: Path, name: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dataset_info.json entry of `name`, checked for what this loader supports."""
    info = load_dataset_info(dataset_dir) if info is None else info
    path = Path(dataset_dir) / DATASET_INFO
    if name not in info:
        raise ConfigError(f"dataset '{name}' is not in {path}; available: {', '.join(sorted(info))}")
    entry = info[name]
    if not isinstance(entry, dict):
        raise DataError(f"{path}: entry '{name}' must be an object")
    try:
        source_key(entry)
    except ConfigError as exc:
        raise ConfigError(f"dataset '{name}' in {path}: {exc}") from None
    except DataError as exc:
        raise DataError(f"{path}: entry '{name}': {exc}") from None
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTINGS:
        raise ConfigError(
            f"dataset '{name}' in {path}: formatting must be {', '.join(FORMATTINGS)}, not {formatting!r}"
        )
    num = entry.get("num_samples")
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num <= 0):
        raise ConfigError(f"dataset '{name}' in {path}: num_samples must be a positive integer, not {num!r}")
    return entry


def check_kind(dataset_dir: Path, name: str, entry: dict[str, Any], kind: str) -> None:
    """A dataset must fit the stage's data kind: preference stages need `ranking: true`, kto a
    `kto_tag` column, and sft cannot learn from a preference dataset's two answers."""
    path = Path(dataset_dir) / DATASET_INFO
    ranking = bool(entry.get("ranking"))
    if kind == "pairwise" and not ranking:
        raise ConfigError(
            f"dataset '{name}' in {path}: this stage trains on preference pairs; its entry needs "
            '"ranking": true and chosen / rejected columns'
        )
    if kind == "sft" and ranking:
        raise ConfigError(
            f"dataset '{name}' in {path} is a preference (ranking) dataset; use it with stage rm, dpo, "
            "orpo or simpo, not sft"
        )
    if kind == "kto" and "kto_tag" not in entry.get("columns", {}):
        raise ConfigError(
            f"dataset '{name}' in {path}: stage kto needs a kto_tag column (columns.kto_tag) holding "
            "true / false per row"
        )


def dataset_source(dataset_dir: Path, name: str, info: dict[str, Any] | None = None) -> Source:
    """Dataset `name`'s source made local (a file, a folder's files, a cached hub repo's files)."""
    return resolve_source(dataset_dir, name, dataset_entry(dataset_dir, name, info))


def dataset_files(dataset_dir: Path, name: str, info: dict[str, Any] | None = None) -> list[Path]:
    """The data files of `name` (see dataset_source)."""
    return list(dataset_source(dataset_dir, name, info).files)


def load_rows(
    dataset_dir: Path, name: str, max_samples: int | None = None, kind: str = "sft"
) -> list[dict[str, Any]]:
    """Normalized rows of dataset `name` (at most `max_samples`), every one validated for `kind`."""
    return [row for _, row in iter_rows(dataset_dir, name, max_samples, kind)]


def has_response(row: dict[str, Any], kind: str) -> bool:
    """Whether a row has text to learn from for `kind`: a non-empty response (sft: any response
    turn; kto: the last turn; pairwise: chosen or rejected), the text itself for pt. Prompt-only
    (unsupervised) rows need none."""
    if kind == "unsupervised":
        return True
    if kind == "pt":
        return bool(row["messages"]) and bool(row["messages"][0]["content"].strip())
    if kind == "pairwise":
        return any(row[key] and row[key]["content"].strip() for key in ("chosen", "rejected"))
    if kind == "kto":
        return bool(row["messages"][-1]["content"].strip())
    return any(m["content"].strip() for m in row["messages"] if m["role"] in ("assistant", "function"))


def iter_rows(
    dataset_dir: Path,
    name: str,
    max_samples: int | None = None,
    kind: str = "sft",
    on_error: str = "error",
    stats: RowStats | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, normalized row) of dataset `name`, validated one by one as they are read.

    A bad row is an error naming its file and row; with on_error "skip" it is skipped and counted
    in `stats` by reason (every row skipped is still an error: nothing to train on). At the end,
    rows with nothing to learn from (has_response: e.g. an empty response would teach only the
    end-of-turn token) are an error when every row is one, else a warning with their count.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"data.on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
    stats = RowStats() if stats is None else stats
    info = load_dataset_info(dataset_dir)
    entry = dataset_entry(dataset_dir, name, info)
    check_kind(dataset_dir, name, entry, kind)
    _note_ignored_columns(name, entry)
    convert = converter(entry, kind)
    files = list(resolve_source(dataset_dir, name, entry).files)
    first_empty = ""
    for file in files:
        if max_samples is not None and stats.kept >= max_samples:
            break
        for where, raw in _read_records(file):
            if max_samples is not None and stats.kept >= max_samples:
                break
            stats.read += 1
            try:
                if isinstance(raw, Unreadable):
                    raise DataError(str(raw))
                if not isinstance(raw, dict):
                    raise DataError(f"{where}: expected an object, got {type(raw).__name__}")
                row = convert(raw, where)
            except DataError as exc:
                if on_error == "error":
                    raise
                stats.skip(_reason(str(exc), where), where)
                continue
            stats.kept += 1
            if not has_response(row, kind):
                stats.empty += 1
                first_empty = first_empty or where
            yield where, row
    skipped = sum(stats.skipped.values())
    if skipped and not stats.kept:
        reasons = "; ".join(f"{n} x {r} (first: {stats.first[r]})" for r, n in stats.skipped.most_common(3))
        raise DataError(
            f"dataset '{name}': all {stats.read} rows were skipped as bad (data.on_error: skip): {reasons}"
        )
    if skipped:
        log.warning(
            "dataset '%s': skipped %d bad rows of %d (data.on_error: skip): %s",
            name,
            skipped,
            stats.read,
            "; ".join(f"{n} x {r}" for r, n in stats.skipped.most_common()),
        )
    if stats.empty:
        _report_empty_responses(name, files, stats.kept, stats.empty, first_empty, kind)


def _reason(message: str, where: str) -> str:
    """An error message without its location and with numbers as N: rows with the same fault count
    under one reason."""
    if message.startswith(where):
        message = message[len(where) :].lstrip(": ")
    elif ": " in message:  # a file-level message names the file and line its own way
        message = message.split(": ", 1)[1]
    return re.sub(r"\b\d+\b", "N", message)


_noted: set[str] = set()


def _note_ignored_columns(name: str, entry: dict[str, Any]) -> None:
    """images / videos / audios columns are for multimodal models: said once per dataset, not read."""
    media = [c for c in MEDIA_COLUMNS if c in entry.get("columns", {})]
    if media and name not in _noted:
        _noted.add(name)
        log.info(
            "dataset '%s': columns %s are ignored (ftflow trains text-only models on each row's text)",
            name,
            ", ".join(media),
        )


def _report_empty_responses(
    name: str, files: list[Path], count: int, empty: int, first: str, kind: str
) -> None:
    where = ", ".join(str(f) for f in files)
    if kind == "pt":
        if empty == count:
            raise DataError(f"dataset '{name}' ({where}): all {count} rows have empty text")
        log.warning("dataset '%s': %d of %d rows have empty text (first: %s)", name, empty, count, first)
        return
    if empty == count:
        raise DataError(
            f"dataset '{name}' ({where}): all {count} rows have an empty response, so training would "
            "only teach the end-of-turn token; check the response column / message tags of its "
            "dataset_info.json entry"
        )
    log.warning(
        "dataset '%s': %d of %d rows have an empty response (first: %s); they teach only the end-of-turn "
        "token",
        name,
        empty,
        count,
        first,
    )
