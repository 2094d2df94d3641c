"""A step's report: what it did, its key numbers and where its output is, as markdown.

The Prefect task publishes it as the step's markdown artifact; it is built here, from the artifact
manifest alone, so any other watcher (the CLI, a web board) can show the same page.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from ftcore.artifacts import Artifact

# manifest fields that are plumbing, not something a reader of the report acts on
_HIDDEN = frozenset({"key", "tags", "tracking_uri", "plots", "tracker_dirs", "eval_config", "metrics"})
_MAX_TEXT = 160


def step_report(job: str, step: str, what: str, artifact: Artifact, extra_markdown: str = "") -> str:
    """Markdown for one finished step: `what` is its one-line purpose, extra_markdown its own page
    (e.g. evaluate's comparison table), appended as is."""
    lines = [f"## {step} · {job}", "", what, "", f"**Output** ({artifact.kind}): `{artifact.path}`  "]
    lines.append(f"fingerprint `{artifact.fingerprint[:16]}`")
    details = [(name, value) for name, value in sorted(artifact.metadata.items()) if _shown(name, value)]
    if details:
        lines += ["", "| detail | value |", "|---|---|"]
        lines += [f"| {name} | {_cell(value)} |" for name, value in details]
    metrics = artifact.metadata.get("metrics")
    if isinstance(metrics, dict) and metrics:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_cell(value)} |" for name, value in sorted(metrics.items())]
    for title, path in sorted((artifact.metadata.get("plots") or {}).items()):
        uri = image_data_uri(Path(path))
        if uri:
            lines += ["", f"![{title}]({uri})"]
    if extra_markdown.strip():
        lines += ["", extra_markdown.strip()]
    return "\n".join(lines) + "\n"


def image_data_uri(path: Path) -> str | None:
    """A PNG as a data: URI, so the page needs no server to show it; None when the file is absent."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _shown(name: str, value: Any) -> bool:
    if name in _HIDDEN or value is None or value == "" or value == []:
        return False
    if isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        return len(value) <= _MAX_TEXT
    if isinstance(value, list):
        return all(isinstance(item, (str, int, float)) for item in value)
    return False


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        value = ", ".join(str(item) for item in value)
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if "/" in text or ":" in text else text
