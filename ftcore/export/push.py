"""Pushing an export folder to the Hugging Face Hub in one commit, so a repo is never half-pushed.

`upload_folder` sends every file in a single commit: either the whole folder lands or nothing does.
Offline (HF_HUB_OFFLINE, or the endpoint unreachable) and a missing token fail before any upload. The
token is read from HF_TOKEN (or huggingface_hub's own login) and never logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ftcore.artifacts import MANIFEST
from ftcore.errors import ConfigError, ServiceUnavailableError
from ftcore.hub import _offline_flag, _reachable

log = logging.getLogger("ftcore.export")

# ftflow's bookkeeping stays local; temp and hidden files never go up
IGNORED = [MANIFEST, ".*", "**/.*"]


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def check_push(repo_id: str) -> str:
    """Fail fast, before any upload, when the push cannot work; returns the token (never log it)."""
    from huggingface_hub import get_token

    key = "export.export_hub_model_id"
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"{key}: '{repo_id}' is not a Hub repo id of the form org/name")
    if _offline_flag("HF_HUB_OFFLINE"):
        raise ServiceUnavailableError(
            f"{key}: cannot push to the Hugging Face Hub: HF_HUB_OFFLINE is set. Unset it on a machine "
            "with network, or remove export_hub_model_id to export locally only"
        )
    endpoint = _endpoint()
    if not _reachable(endpoint):
        raise ServiceUnavailableError(
            f"{key}: cannot push to the Hugging Face Hub: {endpoint} is unreachable (no network?). "
            "Nothing was uploaded"
        )
    token = get_token()
    if not token:
        raise ConfigError(f"{key}: pushing needs a Hugging Face token with write access in HF_TOKEN")
    return token


def push_folder(folder: str | Path, repo_id: str, private: bool = False, message: str | None = None) -> str:
    """Upload `folder` to the model repo `repo_id` (created when missing) in ONE commit; its URL."""
    from huggingface_hub import HfApi

    token = check_push(repo_id)
    api = HfApi(endpoint=_endpoint(), token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=message or "Upload model exported by ftflow",
            ignore_patterns=IGNORED,
        )
    except Exception as exc:  # HTTP errors name the repo and status, never the token
        raise ServiceUnavailableError(f"export.export_hub_model_id: push to {repo_id} failed: {exc}") from exc
    log.info("[push] %s pushed to %s", folder, commit.commit_url)
    return str(commit.commit_url)
