"""Model references -> local directories.

References: a local path, `hf:org/name[@revision]` (Hugging Face Hub, honouring HF_HOME /
HF_HUB_CACHE), `ms:org/name[@revision]` (ModelScope), `builtin:NAME` and a catalogue name
(`Qwen2.5-0.5B-Instruct`, see ftcore.catalog) that `expand_ref` turns into an hf: or ms: reference.
The local cache is tried first; an unreachable hub fails at once with an error that names the model
and says how to get it onto this machine, instead of the hub clients' 20-second retry loops.
"""

from __future__ import annotations

import json
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


def hub_choice(hub: str | None = None) -> str:
    """huggingface | modelscope: `hub` when given, else modelscope when USE_MODELSCOPE_HUB is set
    (LLaMA-Factory's switch), else huggingface."""
    if hub:
        return hub
    return "modelscope" if _offline_flag("USE_MODELSCOPE_HUB") else "huggingface"


def expand_ref(ref: str, hub: str | None = None) -> str:
    """A catalogue name as an hf: / ms: reference on the chosen hub (see hub_choice); any other
    reference (prefixed, or an existing local path) unchanged."""
    from ftcore.catalog import find_model

    if ref.startswith(("hf:", "ms:", "builtin:")) or Path(ref).expanduser().exists():
        return ref
    entry = find_model(ref)
    if entry is None:
        return ref
    chosen = hub_choice(hub)
    repo = entry.repo(chosen)
    if not repo:
        other = "modelscope" if chosen == "huggingface" else "huggingface"
        raise ModelNotAvailableError(
            f"model '{ref}' is not published on {chosen} (catalogue entry {entry.name}); "
            f"set model.hub: {other}"
        )
    return ("hf:" if chosen == "huggingface" else "ms:") + repo


def _unknown_name_hint(name: str) -> str:
    from ftcore.catalog import suggest

    close = suggest(name)
    if not close:
        return ""
    return f"; did you mean a catalogue model: {', '.join(close)}? (`ft models --search ...` lists them)"


def resolve_model(
    ref: str, revision: str | None = None, cache_dir: str | None = None, hub: str | None = None
) -> ResolvedModel:
    """Local directory for a model reference, downloading only when a hub is reachable."""
    ref = expand_ref(ref, hub)
    source, name, rev = parse_ref(ref, revision)
    if source == "builtin":
        return ResolvedModel(ref, source, ensure_builtin(name), f"builtin-v{BUILTIN_VERSION}")
    if source == "local":
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"model '{ref}': {path} is not a model directory (no config.json). Use a local path, "
                "hf:org/name, ms:org/name, a catalogue name (`ft models`) or builtin:tiny-qwen2"
                + ("" if path.exists() else _unknown_name_hint(name))
            )
        resolved = ResolvedModel(ref, source, path.resolve(), None)
    elif source == "hf":
        resolved = _resolve_hf(ref, name, rev, cache_dir)
    else:
        resolved = _resolve_ms(ref, name, rev, cache_dir)
    check_model_files(resolved.path, ref)
    return resolved


def check_model_files(path: Path, ref: str) -> None:
    """Corrupt or truncated files (an interrupted copy or download) named now, not as a loader's
    traceback minutes later: config.json must parse, each safetensors file must be as long as its
    header says, and every shard an index names must exist."""
    config = path / "config.json"
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelNotAvailableError(
            f"model '{ref}': {config} is not valid JSON ({exc}); copy or download the model again"
        ) from None
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelNotAvailableError(f"model '{ref}': {index} is not a valid index ({exc})") from None
        missing = sorted(name for name in shards if not (path / name).is_file())
        if missing:
            raise ModelNotAvailableError(
                f"model '{ref}': {index} names weight files that are missing: {', '.join(missing)}"
            )
    for weights in sorted(path.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            raise ModelNotAvailableError(
                f"model '{ref}': {weights} {problem}; copy or download the model again"
            )


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file, read from its header alone (None when it is whole).

    The format: 8 bytes little-endian header length N, N bytes of JSON giving each tensor's
    data_offsets, then the data; a whole file ends exactly where the last tensor's data ends.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"is truncated ({size} bytes, not even a header)"
        length = int.from_bytes(head, "little")
        if length > size - 8:
            return f"is truncated ({size} bytes; its header alone needs {8 + length})"
        try:
            header = json.loads(handle.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return "has a corrupt header (not safetensors JSON)"
    expected = 8 + length + int(end)
    if size < expected:
        return f"is truncated ({size} bytes of {expected})"
    return None


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
    marker = Path(path) / BUILTIN_MARKER
    if marker.is_file():
        return json.loads(marker.read_text()).get("template")
    return None


def resolve_dataset_repo(
    source: str, repo: str, what: str, revision: str | None = None, cache_dir: str | None = None
) -> tuple[Path, str | None]:
    """(local snapshot folder, its revision) of a hub dataset repo (`source` hf or ms), from the local
    Hugging Face hub cache (HF_HUB_CACHE) or ModelScope cache (MODELSCOPE_CACHE) first; absent and
    offline or unreachable fails at once naming `what` (the dataset and its dataset_info.json key)."""
    from ftcore.errors import DataError

    hf = source == "hf"
    try:
        if hf:
            from huggingface_hub import snapshot_download
        else:
            from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise DataError(f"{what} needs ModelScope: pip install 'ftflow[modelscope]'") from exc
    options = {"revision": revision} if revision else {}
    try:
        path = Path(
            snapshot_download(
                repo_id=repo, repo_type="dataset", cache_dir=cache_dir, local_files_only=True, **options
            )
        )
        if path.is_dir():
            return path, revision or path.name
    except Exception:
        pass
    if hf:
        endpoint, flags = os.environ.get("HF_ENDPOINT", HF_ENDPOINT_DEFAULT), ("HF_HUB_OFFLINE",)
        cache = "Hugging Face cache (HF_HUB_CACHE)"
        how = f"`hf download {repo} --repo-type dataset`"
    else:
        endpoint = os.environ.get("MODELSCOPE_DOMAIN", MS_ENDPOINT_DEFAULT)
        endpoint = endpoint if endpoint.startswith("http") else "https://" + endpoint
        flags = ("MODELSCOPE_OFFLINE", "HF_HUB_OFFLINE")
        cache, how = "ModelScope cache (MODELSCOPE_CACHE)", f"`modelscope download --dataset {repo}`"
    hint = (
        f"pre-download it on a machine with network ({how}) and copy the {cache} here, or point "
        "file_name at local files"
    )
    for flag in flags:
        if _offline_flag(flag):
            raise DataError(f"{what} is not in the local {cache} and {flag} is set: {hint}")
    if not _reachable(endpoint):
        raise DataError(f"{what} is not cached and {endpoint} is unreachable: {hint}")
    try:
        path = Path(snapshot_download(repo_id=repo, repo_type="dataset", cache_dir=cache_dir, **options))
    except Exception as exc:
        raise DataError(f"{what} could not be downloaded: {exc}") from exc
    return path, revision or path.name
