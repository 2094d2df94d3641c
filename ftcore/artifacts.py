"""Step outputs as atomic directories with manifests, plus the fingerprints that key the caches.

A step writes into a temp directory beside its final place and renames it into place when complete;
the manifest is the last file written. So a directory with a manifest is always a finished artifact,
and a killed step leaves at most a temp directory that no one takes for a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

import ftcore

MANIFEST = "ftflow-manifest.json"
_CHUNK = 1024 * 1024


class Artifact(BaseModel):
    """What a step made: enough for later steps to need nothing else."""

    kind: str = Field(description="model, dataset, tokenized, adapter, checkpoint, eval, merged, registered")
    path: str = Field(description="Absolute path of the artifact directory (or a URI for registry entries).")
    fingerprint: str = Field(description="Content hash: changes exactly when the artifact's content changes.")
    metadata: dict[str, Any] = Field(default_factory=dict)


def hash_json(value: Any) -> str:
    """Stable sha256 of a JSON-able value (sorted keys), for config sections and key parts."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint_file(path: Path) -> str:
    """sha256 of a file's whole content, streamed: a change anywhere in a weight file changes it."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(path: Path, ignore: tuple[str, ...]) -> list[tuple[str, Path]]:
    """(relative name, file) of a tree, sorted; skips `ignore`d top-level names and hidden paths."""
    found = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel.split("/")[0] in ignore or "/." in f"/{rel}":
            continue
        found.append((rel, file))
    return found


def fingerprint_path(path: Path, ignore: tuple[str, ...] = (MANIFEST,)) -> str:
    """Content hash of a file or a directory tree (relative names + full file hashes)."""
    path = Path(path)
    if path.is_file():
        return fingerprint_file(path)
    digest = hashlib.sha256()
    for rel, file in _files(path, ignore):
        digest.update(rel.encode())
        digest.update(fingerprint_file(file).encode())
    return digest.hexdigest()


def content_listing(path: Path, ignore: tuple[str, ...] = (MANIFEST,)) -> list[list[Any]]:
    """[relative name, size, sha256] of every file under `path`: the full record of what is there."""
    return [[rel, file.stat().st_size, fingerprint_file(file)] for rel, file in _files(Path(path), ignore)]


def output_fingerprint(key: str, path: Path) -> str:
    """Fingerprint of a step's own output: its key plus the full listing of what it wrote.

    The key carries the step's version and its inputs, so equal bytes made by different code or from
    different inputs still count as different results downstream."""
    return hash_json({"key": key, "files": content_listing(path)})


def compute_key(
    step: str, config: Any, inputs: list[str], extra: Any = None, version: int | None = None
) -> str:
    """Cache key of a step: its config section, its inputs' fingerprints, the step's own version
    (bumped with its code, see ftcore.step_versions) and the ftflow version."""
    parts = {"step": step, "config": config, "inputs": inputs, "extra": extra, "v": ftcore.__version__}
    if version is not None:
        parts["step_version"] = version
    return hash_json(parts)


def read_manifest(path: str | Path) -> Artifact | None:
    """The artifact finished at `path`, or None when nothing complete is there."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return None
    try:
        return Artifact.model_validate_json(manifest.read_text())
    except ValueError:
        return None


def is_present(artifact: Artifact) -> bool:
    """Whether an artifact's files are still there, e.g. before trusting an orchestrator's cache.

    Step outputs (they carry their key) are finished while their manifest exists with the same
    fingerprint (beside the files, or one level up for a step's `model/` folder); inputs (a fetched
    model, an adapter the user brought) while their path exists; registry entries while their model
    version exists in the registry they name.
    """
    if artifact.kind == "registered":  # ask the registry it names (lazy import: mlflow is slow)
        from ftcore.registry import version_exists

        meta = artifact.metadata
        if not all(meta.get(k) for k in ("tracking_uri", "name", "version", "key")):
            return False
        return version_exists(meta["tracking_uri"], meta["name"], meta["version"], meta["key"])
    path = Path(artifact.path)
    if "key" not in artifact.metadata:
        return path.exists()
    found = read_manifest(path) or (read_manifest(path.parent) if path.name == "model" else None)
    return found is not None and found.fingerprint == artifact.fingerprint


def write_manifest(directory: Path, artifact: Artifact) -> None:
    """Write the manifest atomically: it marks the directory complete, so it goes last."""
    tmp = directory / f".{MANIFEST}.{uuid.uuid4().hex}"
    tmp.write_text(artifact.model_dump_json(indent=2))
    os.replace(tmp, directory / MANIFEST)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temp dir beside `final`; on success it replaces `final` in one rename.

    On error the temp dir is removed and whatever was at `final` before is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_stale_temps(parent: Path, older_than_s: float = 0.0) -> list[Path]:
    """Remove temp dirs left by killed steps (never complete, never read); returns what went.

    `older_than_s` spares temp dirs a step running right now may still be filling.
    """
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    now = time.time()
    for child in parent.iterdir():
        stale = child.is_dir() and child.name.startswith((".tmp-", ".old-"))
        if stale and now - child.stat().st_mtime >= older_than_s:
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child)
    return removed
