"""Loads the ftflow_mc task files that sit next to this module, so the task runs offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def load(files: dict[str, str], **_: Any) -> Any:
    """The splits named in the task YAML's dataset_kwargs.files, read from this folder's JSONL files.

    lm-eval passes the task's metadata as keywords too (version, ...): they are ignored."""
    import datasets

    splits = {}
    for split, name in files.items():
        lines = (HERE / name).read_text(encoding="utf-8").splitlines()
        splits[split] = datasets.Dataset.from_list([json.loads(line) for line in lines if line.strip()])
    return datasets.DatasetDict(splits)
