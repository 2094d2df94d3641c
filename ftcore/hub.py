"""Model references -> local directories.

References: a local path, `hf:org/name[@revision]` (Hugging Face Hub, honouring HF_HOME /
HF_HUB_CACHE), `ms:org/name[@revision]` (ModelScope) and `builtin:NAME`. The local cache is tried
first; an unreachable hub fails at once with an error that names the model and says how to get it
onto this machine, instead of the hub clients' 20-second retry loops.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ftcore.builtin import BUILTIN_MARKER, BUILTIN_VERSION, ensure_builtin
from ftcore.errors import ModelNotAvailableError

HF_ENDPOINT_DEFAULT = "https://huggingface.co"
MS_ENDPOINT_DEFAULT = "https://www.modelscope.cn"


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference made local: where its files are and what exactly they are."""

    ref: str
    source: str  # local | hf | ms | builtin
    path: Path
    revision: str | None  # the commit / snapshot actually used, when the source has one


def parse_ref(ref: str, revision: str | None = None) -> tuple[str, str, str | None]:
    """Split 'hf:org/name@rev' into (source, name, revision); `revision` wins over '@rev'."""
    for prefix in ("hf", "ms", "builtin"):
        if ref.startswith(prefix + ":"):
            name = ref[len(prefix) + 1 :]
            ref_rev = None
            if prefix != "builtin" and "@" in name:
                name, ref_rev = name.split("@", 1)
            if not name:
                raise ModelNotAvailableError(f"model reference '{ref}' names no model")
            return prefix, name, revision or ref_rev
    return "local", ref, revision


def resolve_model(ref: str, revision: str | None = None, cache_dir: str | None = None) -> ResolvedModel:
    """Local directory for a model reference, downloading only when a hub is reachable."""
    source, name, rev = parse_ref(ref, revision)
    if source == "builtin":
        return ResolvedModel(ref, source, ensure_builtin(name), f"builtin-v{BUILTIN_VERSION}")
    if source == "local":
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"model '{ref}': {path} is not a model directory (no config.json). Use a local path, "
                "hf:org/name, ms:org/name or builtin:tiny-qwen2"
            )
        return ResolvedModel(ref, source, path.resolve(), None)
    if source == "hf":
        return _resolve_hf(ref, name, rev, cache_dir)
    return _resolve_ms(ref, name, rev, cache_dir)


def _reachable(endpoint: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(endpoint)
    host = parsed.hostname or endpoint
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _resolve_hf(ref: str, repo: str, revision: str | None, cache_dir: str | None) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo, revision=revision, cache_dir=cache_dir, local_files_only=True)
        return ResolvedModel(ref, "hf", Path(path), Path(path).name)
    except Exception:
        pass
    endpoint = os.environ.get("HF_ENDPOINT", HF_ENDPOINT_DEFAULT)
    rev_arg = f" --revision {revision}" if revision else ""
    how = (
        f"pre-download it on a machine with network (`hf download {repo}{rev_arg}`) and copy the "
        "Hugging Face cache here (HF_HUB_CACHE), or point model.name_or_path at a local directory"
    )
    if _offline_flag("HF_HUB_OFFLINE"):
        raise ModelNotAvailableError(
            f"model '{ref}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: {how}"
        )
    if not _reachable(endpoint):
        raise ModelNotAvailableError(f"model '{ref}' is not cached and {endpoint} is unreachable: {how}")
    try:
        path = snapshot_download(repo, revision=revision, cache_dir=cache_dir)
    except Exception as exc:
        raise ModelNotAvailableError(f"model '{ref}' could not be downloaded: {exc}") from exc
    return ResolvedModel(ref, "hf", Path(path), Path(path).name)


def _resolve_ms(ref: str, repo: str, revision: str | None, cache_dir: str | None) -> ResolvedModel:
    try:
        from modelscope import snapshot_download
    except ImportError as exc:
        raise ModelNotAvailableError(
            f"model '{ref}' needs ModelScope: pip install 'ftflow[modelscope]'"
        ) from exc
    kwargs = {"revision": revision} if revision else {}
    try:
        path = snapshot_download(repo, cache_dir=cache_dir, local_files_only=True, **kwargs)
        if path and (Path(path) / "config.json").is_file():
            return ResolvedModel(ref, "ms", Path(path), revision)
    except Exception:
        pass
    endpoint = os.environ.get("MODELSCOPE_DOMAIN", MS_ENDPOINT_DEFAULT)
    if not endpoint.startswith("http"):
        endpoint = "https://" + endpoint
    how = (
        f"pre-download it on a machine with network (`modelscope download --model {repo}`) and copy "
        "the ModelScope cache here (MODELSCOPE_CACHE), or point model.name_or_path at a local directory"
    )
    for flag in ("MODELSCOPE_OFFLINE", "HF_HUB_OFFLINE"):
        if _offline_flag(flag):
            raise ModelNotAvailableError(
                f"model '{ref}' is not in the local ModelScope cache and {flag} is set: {how}"
            )
    if not _reachable(endpoint):
        raise ModelNotAvailableError(
            f"model '{ref}' is not in the local ModelScope cache and {endpoint} is unreachable: {how}"
        )
    try:
        path = snapshot_download(repo, cache_dir=cache_dir, **kwargs)
    except Exception as exc:
        raise ModelNotAvailableError(f"model '{ref}' could not be downloaded: {exc}") from exc
    return ResolvedModel(ref, "ms", Path(path), revision)


def builtin_template(path: Path) -> str | None:
    """The chat template name a built-in model was made with, if `path` is one."""
    import json

    marker = Path(path) / BUILTIN_MARKER
    if marker.is_file():
        return json.loads(marker.read_text()).get("template")
    return None
