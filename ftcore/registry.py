"""MLflow model registry: model versions keyed by the pipeline's cache key, aliases, lineage tags.

A version is tagged `ftflow.key=<cache key of the register step>`, which makes registration
idempotent: re-running a finished job finds its version instead of adding a duplicate. Each version
is an MLflow logged model with its own artifact location. Aliases (`candidate`, later `champion`) are
the only moving pointers, set on every run (never cached); serving and promotion read them, so a
promote or a rollback is one `set_alias` call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftcore.tracking import KEY_TAG, filter_literal, get_client, sqlite_path

if TYPE_CHECKING:  # mlflow is imported lazily (slow import; not every caller registers)
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CANDIDATE = "candidate"  # alias of a freshly registered version
CHAMPION = "champion"  # alias the promote flow moves and serving reads
TAG_PREFIX = "ftflow."
METRIC_TAG_PREFIX = "metric."
EVAL_FINGERPRINT_TAG = f"{TAG_PREFIX}eval_fingerprint"  # the tokenized eval split the metrics came from
EVAL_CONFIG_TAG = f"{TAG_PREFIX}eval_config"  # hash of the eval settings that scored it
HISTORY_TAG = f"{TAG_PREFIX}champion_history"  # on the registered model: JSON list of champion moves
HISTORY_KEEP = 500  # moves kept (a registry tag holds 100k characters; a move is ~90)
_READY_TIMEOUT_S = 300.0
# a quantized export is a sub-artifact of its version's logged model, in this folder of it
QUANTIZED_DIR = "quantized"
QUANTIZED_PATH_TAG = f"{TAG_PREFIX}quantization.path"


def register_model(
    client: MlflowClient,
    model_name: str,
    run_id: str | None,
    source_uri: str,
    tags: Mapping[str, Any],
    key: str,
    model_id: str | None = None,
) -> dict[str, Any]:
    """Register `source_uri` as a version of `model_name`, once per `key`.

    If a version tagged `ftflow.key == key` exists it is returned, so a re-run never creates a
    duplicate. Aliases are not touched: moving one is a separate, uncached action (`set_alias`).
    """
    ensure_registered_model(client, model_name)
    version = find_version_by_key(client, model_name, key)
    if version is None:
        str_tags = {str(k): str(v) for k, v in tags.items()}
        str_tags[KEY_TAG] = key
        version = client.create_model_version(
            model_name, source=source_uri, run_id=run_id, tags=str_tags, model_id=model_id
        )
        version = _wait_ready(client, model_name, version)
        log.info("registered %s version %s from %s", model_name, version.version, source_uri)
    else:
        log.info("%s version %s already registered for key %s", model_name, version.version, key[:12])
    return {
        "name": model_name,
        "version": int(version.version),
        "source": version.source,
        "run_id": version.run_id,
    }


def version_present(client: MlflowClient, model_name: str, version: int | str, key: str) -> bool:
    """Whether version `version` of `model_name` still exists, is READY and was registered under `key`."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return False
        raise
    return found.status == "READY" and found.tags.get(KEY_TAG) == key


def version_exists(tracking_uri: str, model_name: str, version: int | str, key: str) -> bool:
    """`version_present` in the store at `tracking_uri`; a sqlite store that is gone is not recreated."""
    db = sqlite_path(tracking_uri)
    if db is not None and not db.is_file():
        return False
    return version_present(get_client(tracking_uri), model_name, version, key)


def log_model(
    client: MlflowClient,
    experiment_id: str,
    run_id: str | None,
    model_dir: Path,
    name: str,
    trust_remote_code: bool = False,
    quantized_dir: Path | None = None,
) -> tuple[str, str]:
    """Upload `model_dir` as an MLflow logged model of its own; returns (model id, its artifact URI).

    Each upload gets its own artifact location (`<experiment root>/models/<id>/artifacts`), so a
    version never shares or overwrites another's files, and the weights are stored once, not also as
    a run artifact. A full model (config.json) becomes a transformers-flavor MLflow model, so
    `mlflow.transformers.load_model` and `mlflow models serve` can use it, whose `model/` folder is
    the complete Hugging Face folder (weights, tokenizer, chat template, ftflow manifest) for
    transformers and vLLM. An adapter is uploaded as its plain folder (it needs its base to load).
    A quantized export (`quantized_dir`) goes into the same logged model, as its `quantized/` folder.
    A reward model (stage rm: a score head, not a chat model) is uploaded as its plain folder too: the
    chat flavor does not apply to it; `download` returns that folder for the PPO stage to load.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus

    from ftcore.modeling import saved_head

    model_dir = Path(model_dir)
    full = (model_dir / "config.json").is_file()
    reward = full and saved_head(model_dir) == "score"
    logged = client.create_logged_model(
        experiment_id,
        name=name,
        source_run_id=run_id,
        model_type="reward-model" if reward else "transformers" if full else "adapter",
    )
    try:
        if full and not reward:
            # beside the model (same disk, usually larger than /tmp); `.tmp-` so a kill leaves nothing
            # that stale-temp cleaning does not remove
            with tempfile.TemporaryDirectory(prefix=".tmp-mlmodel-", dir=model_dir.parent) as tmp:
                local = Path(tmp) / "model"
                save_transformers_model(model_dir, local, logged, run_id, trust_remote_code)
                client.log_model_artifacts(logged.model_id, str(local))
        else:
            client.log_model_artifacts(logged.model_id, str(model_dir))
        if quantized_dir is not None:
            client.log_model_artifacts(logged.model_id, str(quantized_dir), QUANTIZED_DIR)
        if run_id:
            client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    except BaseException:
        with contextlib.suppress(Exception):
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    # The storage location, not `models:/<id>`: MLflow's sqlite registry resolves that through the
    # process-global tracking URI, not this client's store.
    return logged.model_id, logged.artifact_location


def save_transformers_model(
    model_dir: Path, out: Path, logged: Any, run_id: str | None, trust_remote_code: bool = False
) -> None:
    """Write `model_dir` as a transformers-flavor MLflow model at `out` (task llm/v1/chat).

    Goes through the model object: MLflow 3.17's local-checkpoint path (`transformers_model=<dir>`)
    fails under transformers 5 (`pipelines.check_task` returns the class as a string).
    """
    import mlflow.transformers
    from huggingface_hub import ModelCard
    from mlflow.models import Model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto", trust_remote_code=trust_remote_code)
    mlflow_model = Model(
        artifact_path=logged.artifact_location,
        model_uuid=logged.model_id,
        run_id=run_id,
        model_id=logged.model_id,
    )
    card = ModelCard(f"---\nlicense: other\n---\nFine-tuned by ftflow from {model_dir.name}.\n")
    mlflow.transformers.save_model(
        {"model": model, "tokenizer": tokenizer},
        path=str(out),
        task="llm/v1/chat",
        pip_requirements=pip_requirements(),  # else MLflow adds torchvision, which breaks CPU torch
        model_card=card,
        mlflow_model=mlflow_model,
    )
    hf_dir = out / "model"  # complete the plain HF folder: tokenizer, chat template, lineage files
    for item in model_dir.iterdir():
        if item.is_file() and not (hf_dir / item.name).exists():
            shutil.copy2(item, hf_dir / item.name)


def pip_requirements() -> list[str]:
    """What loading a registered model needs, pinned to this environment (local versions stripped)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in ("torch", "transformers", "tokenizers", "safetensors", "accelerate"):
        try:
            out.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return out


def ensure_registered_model(client: MlflowClient, model_name: str) -> None:
    """Create the registered model unless it exists (tolerates a concurrent creator)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(model_name)
        return
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        client.create_registered_model(model_name, description="Fine-tuned by ftflow.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def find_version_by_key(client: MlflowClient, model_name: str, key: str) -> ModelVersion | None:
    """The (oldest) version of `model_name` tagged `ftflow.key == key`, or None."""
    versions = client.search_model_versions(
        f"name = {filter_literal(model_name)} and tags.`{KEY_TAG}` = {filter_literal(key)}"
    )
    # The store filters on the tag; check again so a store that ignores tag filters cannot mislead us.
    matches = [v for v in versions if v.tags.get(KEY_TAG) == key]
    return min(matches, key=lambda v: int(v.version)) if matches else None


def get_version_by_alias(client: MlflowClient, model_name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    aliases = model.aliases or {}
    if alias not in aliases:
        return None
    return client.get_model_version(model_name, str(aliases[alias]))


def download(tracking_uri: str, model_name: str, alias: str, dst: Path) -> Path:
    """Download `models:/<name>@<alias>` from its store into `dst`; returns its Hugging Face folder
    (the `model/` folder of an MLflow model, or the adapter folder), what serving and transformers load.
    """
    from ftcore.errors import ModelNotAvailableError

    version = get_version_by_alias(get_client(tracking_uri), model_name, alias)
    if version is None:
        uri = model_uri(model_name, alias)
        raise ModelNotAvailableError(f"registry: {uri} does not exist in {tracking_uri}")
    return download_source(tracking_uri, version.source, dst)


def download_source(tracking_uri: str, source: str, dst: Path) -> Path:
    """Download one version's `source` into `dst`; returns its Hugging Face folder (see `download`)."""
    from mlflow.artifacts import download_artifacts

    local = Path(download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=tracking_uri))
    return local / "model" if (local / "MLmodel").is_file() else local


def set_alias(client: MlflowClient, model_name: str, alias: str, version: int | str) -> None:
    """Point `alias` at `version` (moving it off any other version): promote and rollback use this."""
    client.set_registered_model_alias(model_name, alias, str(version))


def model_uri(model_name: str, alias: str) -> str:
    """`models:/<name>@<alias>`, the URI serving resolves."""
    return f"models:/{model_name}@{alias}"


def lineage_tags(
    *,
    config_hash: str,
    dataset_fingerprint: str,
    base_model_ref: str,
    base_model_revision: str | None,
    ftflow_version: str,
    metrics: Mapping[str, float],
    eval_fingerprint: str = "",
    eval_config: str = "",
) -> dict[str, str]:
    """Tags that say where a version came from and how it scored, so promotion needs nothing else.

    `eval_fingerprint` / `eval_config` name the eval set and the settings that scored it: promotion
    refuses to compare versions whose scores came from different ones.
    """
    tags = {
        f"{TAG_PREFIX}config_hash": config_hash,
        f"{TAG_PREFIX}dataset_fingerprint": dataset_fingerprint,
        f"{TAG_PREFIX}base_model": base_model_ref,
        f"{TAG_PREFIX}base_model_revision": base_model_revision or "",
        f"{TAG_PREFIX}version": ftflow_version,
    }
    if eval_fingerprint:
        tags[EVAL_FINGERPRINT_TAG] = eval_fingerprint
    if eval_config:
        tags[EVAL_CONFIG_TAG] = eval_config
    for name, value in metrics.items():
        text = format_metric(value)
        if text is not None:
            tags[f"{METRIC_TAG_PREFIX}{name}"] = text
    return tags


def format_metric(value: Any) -> str | None:
    """6 significant digits (enough to compare, short to read); None for NaN / inf / non-numbers."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    return f"{number:.6g}"


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float]:
    """Inverse of the metric part of `lineage_tags`: what a promotion gate reads back."""
    out: dict[str, float] = {}
    for key, value in tags.items():
        if key.startswith(METRIC_TAG_PREFIX):
            try:
                out[key[len(METRIC_TAG_PREFIX) :]] = float(value)
            except ValueError:
                continue
    return out


def champion_history(client: MlflowClient, model_name: str) -> list[dict[str, Any]]:
    """Every recorded champion move, oldest first: {action, version, previous, at}."""
    model = client.get_registered_model(model_name)
    text = (model.tags or {}).get(HISTORY_TAG)
    try:
        events = json.loads(text) if text else []
    except ValueError:
        log.warning("%s: tag %s is not JSON; starting a new history", model_name, HISTORY_TAG)
        return []
    return [e for e in events if isinstance(e, dict) and "version" in e] if isinstance(events, list) else []


def champion_stack(events: list[dict[str, Any]]) -> list[int]:
    """The champions in force, oldest first, as the moves left them: a promotion pushes its version,
    a rollback returns to the latest earlier entry of its version (the ones after it are undone)."""
    stack: list[int] = []
    for event in events:
        version, previous = int(event["version"]), event.get("previous")
        if previous is not None and (not stack or stack[-1] != int(previous)):
            stack.append(int(previous))  # the alias was moved outside ftflow: count it as a champion
        below = stack[:-1]
        if event.get("action") == "rollback" and version in below:
            del stack[len(below) - below[::-1].index(version) :]
        else:
            stack.append(version)
    return stack


def move_champion(client: MlflowClient, model_name: str, version: int, action: str, at: str) -> int | None:
    """Point `champion` at `version` and append the move to the history; returns the previous champion."""
    current = get_version_by_alias(client, model_name, CHAMPION)
    previous = int(current.version) if current is not None else None
    set_alias(client, model_name, CHAMPION, version)
    events = champion_history(client, model_name)
    events.append({"action": action, "version": int(version), "previous": previous, "at": at})
    client.set_registered_model_tag(model_name, HISTORY_TAG, json.dumps(events[-HISTORY_KEEP:]))
    return previous


def _wait_ready(client: MlflowClient, model_name: str, version: ModelVersion) -> ModelVersion:
    """Servers may register asynchronously (PENDING_REGISTRATION); wait until READY or fail."""
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
        time.sleep(1.0)
        version = client.get_model_version(model_name, str(version.version))
    if version.status != "READY":
        raise RuntimeError(
            f"model version {model_name}/{version.version} is {version.status}: {version.status_message}"
        )
    return version
