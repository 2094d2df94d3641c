"""Datasets named in a LLaMA-Factory `dataset_info.json`, read into normalized rows.

A normalized row is `{"messages": [{"role": "user" | "assistant", "content": str}, ...],
"system": str | None}` with alternating roles ending on an assistant turn. Every row is validated
here, in plain Python and before any tokenization, and every error names the file and row (or line).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ftcore.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATASET_INFO = "dataset_info.json"
FILE_SUFFIXES = (".json", ".jsonl")

# LLaMA-Factory's defaults for `columns` and `tags`.
ALPACA_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system"}
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "system_tag": "system",
}
OPENAI_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}
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
    if entry.get("ranking"):
        raise ConfigError(f"dataset '{name}' in {path}: ranking (preference) datasets are not supported yet")
    return entry


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


def load_rows(dataset_dir: Path, name: str, max_samples: int | None = None) -> list[dict[str, Any]]:
    """Normalized rows of dataset `name` (at most `max_samples`), every one validated."""
    return [row for _, row in iter_rows(dataset_dir, name, max_samples)]


def iter_rows(
    dataset_dir: Path, name: str, max_samples: int | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, normalized row) of dataset `name`, validated one by one as they are read.

    At the end, rows whose responses are all empty (they would teach only the end-of-turn token)
    are an error when every row is one, else a warning with their count.
    """
    info = load_dataset_info(dataset_dir)
    convert = _converter(dataset_entry(dataset_dir, name, info))
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
            if not any(m["content"].strip() for m in row["messages"] if m["role"] == "assistant"):
                empty += 1
                first_empty = first_empty or where
            yield where, row
    if empty:
        _report_empty_responses(name, files, count, empty, first_empty)


def _report_empty_responses(name: str, files: list[Path], count: int, empty: int, first: str) -> None:
    where = ", ".join(str(f) for f in files)
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


def _converter(entry: dict[str, Any]) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    """The function turning one raw record of this dataset_info.json entry into a normalized row."""
    if entry.get("formatting", "alpaca") == "alpaca":
        return _alpaca_converter(entry)
    return _sharegpt_converter(entry)


def _text(raw: dict[str, Any], column: str | None, where: str, required: bool = False) -> str | None:
    """A string column; absent or null is None unless required, any other type is an error."""
    value = raw.get(column) if column else None
    if value is None:
        if required:
            raise DataError(f"{where}: missing required column '{column}' (found: {', '.join(raw)})")
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: column '{column}' must be a string, got {type(value).__name__}")
    return value


def _alpaca_converter(entry: dict[str, Any]):
    """A function turning one alpaca record into a normalized row."""
    cols = {**ALPACA_COLUMNS, **entry.get("columns", {})}

    def convert(raw: dict[str, Any], where: str) -> dict[str, Any]:
        prompt = _text(raw, cols["prompt"], where, required=True)
        query = _text(raw, cols["query"], where)
        response = _text(raw, cols["response"], where, required=True)
        messages = []
        history = raw.get(cols["history"]) if cols["history"] else None
        if history is not None:
            if not isinstance(history, list) or not all(
                isinstance(turn, list) and len(turn) == 2 and all(isinstance(t, str) for t in turn)
                for turn in history
            ):
                raise DataError(f"{where}: column '{cols['history']}' must be a list of [prompt, response]")
            for old_prompt, old_response in history:
                messages += [_msg("user", old_prompt), _msg("assistant", old_response)]
        user = "\n".join(part for part in (prompt, query) if part)
        messages += [_msg("user", user), _msg("assistant", response)]
        return {"messages": messages, "system": _text(raw, cols["system"], where)}

    return convert


def _sharegpt_converter(entry: dict[str, Any]):
    """A function turning one sharegpt (or OpenAI messages) record into a normalized row."""
    cols = {**SHAREGPT_COLUMNS, **entry.get("columns", {})}
    explicit_tags = "tags" in entry
    tags = {**SHAREGPT_TAGS, **entry.get("tags", {})}
    explicit_messages = "messages" in entry.get("columns", {})

    def convert(raw: dict[str, Any], where: str) -> dict[str, Any]:
        column = cols["messages"]
        if not explicit_messages and column not in raw and "messages" in raw:
            column = "messages"  # OpenAI-style rows
        turns = raw.get(column)
        if turns is None:
            raise DataError(f"{where}: missing required column '{column}' (found: {', '.join(raw)})")
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise DataError(f"{where}: column '{column}' must be a list of message objects")
        row_tags = tags
        if not explicit_tags and turns and "role" in turns[0] and tags["role_tag"] not in turns[0]:
            row_tags = OPENAI_TAGS
        system = _text(raw, cols["system"], where)
        role_of = {row_tags["user_tag"]: "user", row_tags["assistant_tag"]: "assistant"}
        if turns and turns[0].get(row_tags["role_tag"]) == row_tags["system_tag"]:
            system = _turn_content(turns[0], row_tags, where, 0)
            turns = turns[1:]
            offset = 1
        else:
            offset = 0
        messages = []
        for i, turn in enumerate(turns):
            tag = turn.get(row_tags["role_tag"])
            expected = "user" if i % 2 == 0 else "assistant"
            if role_of.get(tag) != expected:
                want = row_tags["user_tag"] if expected == "user" else row_tags["assistant_tag"]
                raise DataError(
                    f"{where}: message {i + offset} has {row_tags['role_tag']}={tag!r}, expected {want!r} "
                    "(turns must alternate user/assistant after an optional leading system turn)"
                )
            messages.append(_msg(expected, _turn_content(turn, row_tags, where, i + offset)))
        if not messages or len(messages) % 2:
            raise DataError(
                f"{where}: a conversation must end with an assistant turn (got {len(messages)} turns)"
            )
        return {"messages": messages, "system": system}

    return convert


def _turn_content(turn: dict[str, Any], tags: dict[str, str], where: str, index: int) -> str:
    content = turn.get(tags["content_tag"])
    if not isinstance(content, str):
        raise DataError(f"{where}: message {index} needs a string '{tags['content_tag']}'")
    return content


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}
