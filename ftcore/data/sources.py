"""Where a dataset's records come from: its dataset_info.json source made into local files, and each
file type read record by record with the file and row (or line) of each one.

Sources, as LLaMA-Factory's parser reads them: `file_name` (a file, or a folder whose files are all
of one type), `hf_hub_url` / `ms_hub_url` (a dataset repo in the local Hugging Face hub or
ModelScope cache; absent and offline is a fast error naming the dataset and key). For a hub repo,
`folder` is the folder inside it, `subset` its sub-folder (a config of a parquet-converted repo) and
`split` picks the files named for that split (`train-00000-of-00001.parquet`, `data/train.jsonl`,
`train/...`); files named for no split are the train split, as Hugging Face datasets treats them.
`ms_hub_url` is used when USE_MODELSCOPE_HUB is set or no `hf_hub_url` is given (LLaMA-Factory's rule).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcore.errors import ConfigError, DataError

# suffix -> LLaMA-Factory's / datasets' file type
FILE_TYPES = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".txt": "text",
}
UNSUPPORTED_SOURCES = ("om_hub_url", "script_url", "cloud_file_name")
KNOWN_SPLITS = ("train", "validation", "valid", "val", "test", "dev", "eval")
_BATCH = 1000


class Unreadable(str):
    """A record that could not be parsed (its error message), yielded in its place so that
    data.on_error: skip can skip one bad line of a .jsonl / .csv file and read on."""


@dataclass(frozen=True)
class Source:
    """A dataset's records made local: `origin` file | hf | ms, the repo for hub ones, its files."""

    name: str
    origin: str
    repo: str | None
    revision: str | None
    files: tuple[Path, ...]


def source_key(entry: dict[str, Any]) -> str:
    """The dataset_info.json key that says where the rows are (LLaMA-Factory's precedence)."""
    from ftcore.hub import hub_choice

    if "hf_hub_url" in entry or "ms_hub_url" in entry:
        if "ms_hub_url" in entry and (hub_choice() == "modelscope" or "hf_hub_url" not in entry):
            return "ms_hub_url"
        return "hf_hub_url"
    if "file_name" in entry:
        return "file_name"
    other = [key for key in UNSUPPORTED_SOURCES if key in entry]
    if other:
        raise ConfigError(f"source {other[0]} is not supported; use file_name, hf_hub_url or ms_hub_url")
    raise DataError("the entry has no file_name, hf_hub_url or ms_hub_url")


def resolve_source(dataset_dir: Path, name: str, entry: dict[str, Any]) -> Source:
    """The local files of dataset `name` (entry: its dataset_info.json entry, already checked)."""
    key = source_key(entry)
    if key == "file_name":
        path = Path(dataset_dir) / entry["file_name"]
        return Source(name, "file", None, None, tuple(_local_files(name, path)))
    from ftcore.hub import resolve_dataset_repo

    repo = entry[key]
    origin = "hf" if key == "hf_hub_url" else "ms"
    what = f"dataset '{name}' ({key}: {repo} in {Path(dataset_dir) / 'dataset_info.json'})"
    root, revision = resolve_dataset_repo(origin, repo, what, entry.get("revision"))
    return Source(name, origin, repo, revision, tuple(_repo_files(what, root, entry)))


def _local_files(name: str, path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise DataError(f"dataset '{name}': folder {path} holds no data files")
        _check_types(f"dataset '{name}'", files)
        return files
    if not path.is_file():
        raise DataError(f"dataset '{name}': data file {path} does not exist")
    _check_types(f"dataset '{name}'", [path])
    return [path]


def _check_types(what: str, files: list[Path]) -> None:
    """Every file of a known type, all of one type (LLaMA-Factory: 'File types should be identical')."""
    for file in files:
        if file.suffix.lower() not in FILE_TYPES:
            raise DataError(f"{what}: {file} is not a data file of a known type ({', '.join(FILE_TYPES)})")
    types = sorted({FILE_TYPES[f.suffix.lower()] for f in files})
    if len(types) > 1:
        raise DataError(
            f"{what}: its files must all be of one type, found {', '.join(types)} in {files[0].parent}"
        )


def _split_of(relative: Path) -> str | None:
    """The split a repo file is named for (a folder or a file-name prefix), else None."""
    for part in [*relative.parts[:-1], relative.name]:
        head = re.split(r"[-_.]", part.lower(), maxsplit=1)[0]
        if head in KNOWN_SPLITS:
            return head
    return None


def _repo_files(what: str, root: Path, entry: dict[str, Any]) -> list[Path]:
    base = root / entry["folder"] if entry.get("folder") else root
    if entry.get("subset") and (base / entry["subset"]).is_dir():
        base = base / entry["subset"]
    if not base.is_dir():
        raise DataError(f"{what}: folder {base} does not exist in the cached repo {root}")
    files = sorted(
        p
        for p in base.rglob("*")
        if p.is_file() and p.suffix.lower() in FILE_TYPES and not any(s.startswith(".") for s in p.parts)
    )
    split = str(entry.get("split", "train"))
    picked = [f for f in files if (_split_of(f.relative_to(base)) or "train") == split]
    if not picked:
        found = sorted({_split_of(f.relative_to(base)) or "train" for f in files})
        raise DataError(
            f"{what}: no data files of split '{split}' in {base}"
            + (f" (splits found: {', '.join(found)})" if found else " (no data files)")
        )
    _check_types(what, picked)
    return picked


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


def read_json(path: Path) -> Any:
    """A whole JSON file; a syntax error names the file, line and column."""
    try:
        return json.loads(_decode(path.read_bytes(), path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc


def read_records(path: Path) -> Iterator[tuple[str, Any]]:
    """(location, record) pairs of one data file, read lazily (except a .json list). The location
    reads `file: row N` (.json, .parquet, .arrow: 0-based) or `file: line N` (.jsonl, .csv, .txt)."""
    kind = FILE_TYPES.get(path.suffix.lower())
    if path.suffix.lower() == ".jsonl":
        yield from _jsonl(path)
    elif kind == "json":
        records = read_json(path)
        if not isinstance(records, list):
            raise DataError(f"{path}: a .json data file must hold a list of rows")
        for index, record in enumerate(records):
            yield f"{path}: row {index}", record
    elif kind == "csv":
        yield from _csv(path)
    elif kind == "text":
        yield from _text(path)
    elif kind in ("parquet", "arrow"):
        index = 0
        for batch in _arrow_batches(path, kind):
            for record in batch.to_pylist():
                yield f"{path}: row {index}", record
                index += 1
    else:
        raise DataError(f"{path}: not a data file of a known type ({', '.join(FILE_TYPES)})")


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
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
                record = Unreadable(f"{path}: invalid JSON at line {lineno}: {exc.msg}")
            yield f"{path}: line {lineno}", record


def _csv(path: Path) -> Iterator[tuple[str, Any]]:
    """Rows under the header line; an empty cell is a missing value (as datasets' csv reader)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            for record in reader:
                if None in record:
                    where = f"{path}: line {reader.line_num}"
                    yield where, Unreadable(f"{where}: has more cells than the header")
                    continue
                yield (
                    f"{path}: line {reader.line_num}",
                    {k: (v if v != "" else None) for k, v in record.items()},
                )
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8: {exc.reason}; save the file as UTF-8") from exc
    except csv.Error as exc:
        raise DataError(f"{path}: invalid CSV: {exc}") from exc


def _text(path: Path) -> Iterator[tuple[str, Any]]:
    """One text per line ({"text": line}, for pt); blank lines are not rows."""
    offset = 0
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = _decode(raw, path, lineno, offset).rstrip("\r\n")
            offset += len(raw)
            if line.strip():
                yield f"{path}: line {lineno}", {"text": line}


def _arrow_batches(path: Path, kind: str) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            yield from pq.ParquetFile(str(path)).iter_batches(batch_size=_BATCH)
            return
        with pa.memory_map(str(path)) as source:
            try:
                reader: Any = pa.ipc.open_stream(source)
                yield from reader
            except pa.ArrowInvalid:
                source.seek(0)
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    yield reader.get_batch(i)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable {kind} file: {exc}") from exc
