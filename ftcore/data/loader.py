"""Datasets named in a LLaMA-Factory `dataset_info.json`, read into normalized rows.

Rows are normalized by ftcore.data.converter (its docstring has the row's shape). Every row is
validated here, in plain Python and before any tokenization, for the data kind the stage needs
(ftcore.data.processor.STAGE_DATA), and every error names the file and row (or line).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ftcore.data.converter import converter
from ftcore.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATASET_INFO = "dataset_info.json"
FILE_SUFFIXES = (".json", ".jsonl")

UNSUPPORTED_SOURCES = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


def _decode(data: bytes, path: Path, first_line: int = 1, offset: int = 0) -> str:
    """UTF-8 text (a leading BOM is dropped); bad bytes are an error naming file, line and byte."""
    try:
        return data.decode("utf-8-sig" if offset == 0 else "utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        raise DataError(
            f"{path}: not valid UTF-8 at line {line} (byte offset {offset + exc.start}): {exc.reason}; "
            "save the file as UTF-8"
        ) from exc


def _read_json(path: Path) -> Any:
    """A whole JSON file; a syntax error names the file, line and column."""
    try:
        return json.loads(_decode(path.read_bytes(), path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc


def load_dataset_info(dataset_dir: Path) -> dict[str, dict[str, Any]]:
    """Parse `dataset_dir/dataset_info.json`; its absence or bad JSON is an error naming the file."""
    path = Path(dataset_dir) / DATASET_INFO
    if not path.is_file():
        raise ConfigError(f"no {DATASET_INFO} in dataset_dir {dataset_dir} (expected {path})")
    info = _read_json(path)
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
    hub = [key for key in UNSUPPORTED_SOURCES if key in entry]
    if hub and "file_name" not in entry:
        raise ConfigError(f"dataset '{name}' in {path}: source {hub[0]} is not supported yet; use file_name")
    if "file_name" not in entry:
        raise DataError(f"{path}: entry '{name}' has no file_name")
    formatting = entry.get("formatting", "alpaca")
    if formatting not in ("alpaca", "sharegpt"):
        raise ConfigError(
            f"dataset '{name}' in {path}: formatting must be alpaca or sharegpt, not {formatting!r}"
        )
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


def dataset_files(dataset_dir: Path, name: str, info: dict[str, Any] | None = None) -> list[Path]:
    """The data files of `name`: its file_name, or the .json / .jsonl files in that folder."""
    path = Path(dataset_dir) / dataset_entry(dataset_dir, name, info)["file_name"]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in FILE_SUFFIXES)
        if not files:
            raise DataError(f"dataset '{name}': folder {path} holds no .json or .jsonl files")
        return files
    if not path.is_file():
        raise DataError(f"dataset '{name}': data file {path} does not exist")
    if path.suffix not in FILE_SUFFIXES:
        raise DataError(f"dataset '{name}': {path} is not a .json or .jsonl file")
    return [path]


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
    dataset_dir: Path, name: str, max_samples: int | None = None, kind: str = "sft"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, normalized row) of dataset `name`, validated one by one as they are read.

    At the end, rows with nothing to learn from (has_response: e.g. an empty response would teach
    only the end-of-turn token) are an error when every row is one, else a warning with their count.
    """
    info = load_dataset_info(dataset_dir)
    entry = dataset_entry(dataset_dir, name, info)
    check_kind(dataset_dir, name, entry, kind)
    convert = converter(entry, kind)
    files = dataset_files(dataset_dir, name, info)
    count, empty, first_empty = 0, 0, ""
    for file in files:
        if max_samples is not None and count >= max_samples:
            break
        for where, raw in _read_records(file):
            if max_samples is not None and count >= max_samples:
                break
            if not isinstance(raw, dict):
                raise DataError(f"{where}: expected an object, got {type(raw).__name__}")
            row = convert(raw, where)
            count += 1
            if not has_response(row, kind):
                empty += 1
                first_empty = first_empty or where
            yield where, row
    if empty:
        _report_empty_responses(name, files, count, empty, first_empty, kind)


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


def _read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, record) pairs; the location reads `file: row N` (.json) or `file: line N` (.jsonl)."""
    if path.suffix == ".jsonl":
        offset = 0
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                line = _decode(raw, path, lineno, offset)
                offset += len(raw)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: invalid JSON at line {lineno}: {exc.msg}") from exc
                yield f"{path}: line {lineno}", record
        return
    records = _read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: a .json data file must hold a list of rows")
    for index, record in enumerate(records):
        yield f"{path}: row {index}", record
