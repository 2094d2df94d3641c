"""MLflow runs and metrics through an explicit `MlflowClient`.

No global active run and nothing set at import: every call names its client and run id, so steps
running in parallel (Prefect tasks, threads, worker processes) never share tracking state. The default
store is `sqlite:///<workdir>/mlflow.db` with artifacts under `<workdir>/mlartifacts`, so a job needs no
server and leaves nothing in the current directory. With a server (MLFLOW_TRACKING_URI=http://...) runs
and models use the server's artifact store; nothing a registered model needs stays on the job's disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:  # mlflow is imported lazily: it is slow to import and not every step tracks.
    from mlflow import MlflowClient

    from ftcore.config.sections import RegistryConfig

log = logging.getLogger(__name__)

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
KEY_TAG = "ftflow.key"  # the cache key a run belongs to; lets a re-run reuse its run
# MLflow's HTTP client retries for ~4 minutes by default; a job should fail in seconds instead.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",  # per request; big uploads stream, so this is not a cap
}
REDACTED = "***"

# MLflow's limits (mlflow.utils.validation); copied so this module imports without mlflow.
MAX_PARAM_VAL_LENGTH = 6000
MAX_KEY_LENGTH = 250
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000

_SECRET_WORDS = frozenset({"token", "secret", "secrets", "password", "passwd", "apikey"})
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /:]")


# --------------------------------------------------------------------------- store and experiment


def resolve_tracking_uri(cfg_uri: str | None, workdir: Path) -> str:
    """The store to use: MLFLOW_TRACKING_URI wins (deployments set it), then the config, else a local db."""
    env = os.environ.get(ENV_TRACKING_URI, "").strip()
    if env:
        return env
    if cfg_uri:
        return cfg_uri
    return f"sqlite:///{Path(workdir).resolve() / DEFAULT_DB}"


def is_local_store(tracking_uri: str) -> bool:
    """True for stores with no server (sqlite, file paths), whose artifacts we keep beside the store."""
    if tracking_uri.startswith(("sqlite:", "file:")):
        return True
    return "://" not in tracking_uri and not tracking_uri.startswith("databricks")  # a plain path


def is_server(tracking_uri: str) -> bool:
    """True for a tracking server (http / https): it owns the artifact store, not this machine."""
    return tracking_uri.lower().startswith(("http://", "https://"))


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` store (relative to the current folder, as MLflow reads it)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    raw = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    if not raw or raw == ":memory:":
        return None
    return Path(raw).expanduser().absolute()


def default_artifact_root(tracking_uri: str) -> Path | None:
    """Where a new experiment keeps its artifacts: `mlartifacts` beside a sqlite database, else the
    store's own default (a server's artifact store, a file store's own folder), i.e. None.

    Beside the database, not in the workdir of whichever job came first: jobs sharing one sqlite file
    share its artifact folder, so deleting one job's workdir never removes another job's registered
    models. The default store is `<workdir>/mlflow.db`, so a job alone still keeps all in its workdir.
    """
    db = sqlite_path(tracking_uri)
    return db.parent / DEFAULT_ARTIFACTS if db is not None else None


def get_client(tracking_uri: str) -> MlflowClient:
    """A client bound to one store.

    A server gets short HTTP retries and timeouts (MLflow's defaults retry for ~4 minutes), so a dead
    server fails a job in seconds; a user's own MLFLOW_HTTP_* settings win. A sqlite store is created
    and migrated under a lock file beside the database, so concurrent first jobs cannot race in
    MLflow's schema migration.
    """
    from mlflow import MlflowClient

    if is_server(tracking_uri):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    db = sqlite_path(tracking_uri)
    if db is None:
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with _store_lock(db):  # the client builds (and migrates) the tracking store in its constructor
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.search_registered_models(max_results=1)  # the registry store: built on first use
    return client


@contextlib.contextmanager
def _store_lock(db: Path) -> Iterator[None]:
    """Hold `<db>.lock` (an flock: released by the OS if the process dies) while the store is built."""
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any work, when a tracking server does not answer (non-server stores pass).

    Raises ServiceUnavailableError naming the URI and what to do, instead of MLflow retrying for
    minutes and ending in a traceback.
    """
    import urllib.error
    import urllib.request

    from ftcore.errors import ServiceUnavailableError

    if not is_server(uri):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        if exc.code < 500:  # it answers (maybe no /health behind a proxy, or auth): reachable
            return
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise ServiceUnavailableError(
        f"MLflow tracking server {uri} is not reachable ({reason}). Start it, fix "
        f"{ENV_TRACKING_URI} / registry.tracking_uri, or unset both to use the local store "
        "sqlite:///<workdir>/mlflow.db."
    )


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """Id of experiment `name`, created (or restored from deleted) if needed.

    `artifact_root` only applies on creation (None: the store's default, e.g. a server's artifact
    store); an existing experiment keeps its artifact location, with a warning when that is not the
    one wanted (an experiment made by an older ftflow in some job's workdir).
    """
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        _warn_location(client, exp.name, exp.artifact_location, artifact_root)
        return exp.experiment_id
    location = None
    if artifact_root is not None:
        artifact_root = Path(artifact_root).resolve()
        artifact_root.mkdir(parents=True, exist_ok=True)
        location = artifact_root.as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as exc:  # another process created it between our get and create
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _warn_location(client: MlflowClient, name: str, location: str, wanted: Path | None) -> None:
    """An existing experiment keeps its artifact location (e.g. one an older ftflow put in some job's
    workdir, or a path on a worker's disk on a server): say so, since only a new experiment changes it."""
    moved = wanted is not None and location.rstrip("/") != Path(wanted).resolve().as_uri()
    on_disk = wanted is None and is_server(client.tracking_uri)
    if location.startswith(("file:", "/")) and (moved or on_disk):
        where = wanted or "the server's artifact store"
        log.warning(
            "experiment %r stores artifacts at %s, not in %s; use a new registry.experiment "
            "unless that path is shared",
            name,
            location,
            where,
        )


def open_experiment(cfg: RegistryConfig, workdir: Path) -> tuple[MlflowClient, str]:
    """Client and experiment id for a job's config: the one-liner steps and tasks call."""
    uri = resolve_tracking_uri(cfg.tracking_uri, workdir)
    client = get_client(uri)
    return client, ensure_experiment(client, cfg.experiment, default_artifact_root(uri))


# --------------------------------------------------------------------------- runs


def start_run(
    client: MlflowClient, experiment_id: str, run_name: str | None, tags: Mapping[str, Any] | None = None
) -> str:
    """Create a run (status RUNNING) and return its id; the caller must end it with `end_run`."""
    str_tags = {k: _truncate(str(v), MAX_PARAM_VAL_LENGTH) for k, v in (tags or {}).items()}
    run = client.create_run(experiment_id, run_name=run_name, tags=str_tags)
    return run.info.run_id


def find_run(client: MlflowClient, experiment_id: str, tag_key: str, tag_value: str) -> str | None:
    """Newest active run whose tag `tag_key` equals `tag_value`, so a re-run can reuse it."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tag_key}` = {filter_literal(tag_value)}",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def get_or_start_run(
    client: MlflowClient,
    experiment_id: str,
    run_name: str | None,
    key: str,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """The run tagged with cache key `key` (set RUNNING again), or a new one carrying that tag."""
    run_id = find_run(client, experiment_id, KEY_TAG, key)
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    return start_run(client, experiment_id, run_name, {**(tags or {}), KEY_TAG: key})


def end_run(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    """Mark the run terminated: FINISHED, FAILED or KILLED."""
    client.set_terminated(run_id, status=status)


# --------------------------------------------------------------------------- params and metrics


def is_secret_key(key: str) -> bool:
    """Whether a (dotted) key names a secret: api_key, token, secret, password in any segment.

    Matches whole words, so `hf_token` and `serve.api_key` are secrets but `max_new_tokens` and
    `tokenizer` are not.
    """
    low = key.lower()
    if "api_key" in low or "api-key" in low:
        return True
    return any(word in _SECRET_WORDS for word in _WORD_SPLIT.split(low))


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts / pydantic models -> {"a.b.c": "value"}, secrets redacted, values truncated."""
    out: dict[str, str] = {}
    if isinstance(params, BaseModel):
        params = params.model_dump()  # python mode keeps SecretStr objects, redacted below
    for raw_key, value in params.items():
        key = f"{prefix}{raw_key}"
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=f"{key}."))
            continue
        if isinstance(value, SecretStr) or (value is not None and is_secret_key(key)):
            text = REDACTED
        else:
            text = _redact_nested(value)
        out[_truncate(key, MAX_KEY_LENGTH)] = _truncate(text, MAX_PARAM_VAL_LENGTH)
    return out


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> dict[str, str]:
    """Log flattened, redacted params; returns what was logged.

    MLflow params are write-once, so keys the run already holds (a reused run) are skipped; a changed
    value is warned about, not raised, since the run's cache key already covers the config.
    """
    from mlflow.entities import Param

    flat = flatten_params(params)
    existing = client.get_run(run_id).data.params
    todo: dict[str, str] = {}
    for key, value in flat.items():
        if key not in existing:
            todo[key] = value
        elif existing[key] != value:
            log.warning("param %s already logged as %r on run %s; keeping it", key, existing[key], run_id)
    items = [Param(k, v) for k, v in todo.items()]
    for batch in _chunks(items, _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=batch, synchronous=True)
    return flat


def log_metrics(
    client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int | None = None
) -> dict[str, float]:
    """Log numeric metrics at `step`, skipping NaN / inf and non-numbers; returns what was logged."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    logged: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)  # numpy / torch scalars
            except (TypeError, ValueError):
                continue
        value = float(value)
        if not math.isfinite(value):
            continue
        logged[_metric_key(key)] = value
    items = [Metric(k, v, now, step or 0) for k, v in logged.items()]
    for batch in _chunks(items, _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch, synchronous=True)
    return logged


def log_artifacts(
    client: MlflowClient, run_id: str, local_dir: Path, artifact_path: str | None = None
) -> str:
    """Copy a directory (or one file) into the run's artifacts; returns its artifact URI."""
    local = Path(local_dir)
    if local.is_file():
        client.log_artifact(run_id, str(local), artifact_path)
        suffix = f"{artifact_path}/{local.name}" if artifact_path else local.name
    else:
        client.log_artifacts(run_id, str(local), artifact_path)
        suffix = artifact_path or ""
    root = client.get_run(run_id).info.artifact_uri.rstrip("/")
    return f"{root}/{suffix}" if suffix else root


# --------------------------------------------------------------------------- helpers


def _redact_nested(value: Any) -> str:
    """A param value as text: lists / tuples as JSON, with any SecretStr inside shown redacted."""
    if isinstance(value, SecretStr):
        return REDACTED
    if isinstance(value, (list, tuple)):
        return json.dumps(value, default=lambda v: REDACTED if isinstance(v, SecretStr) else str(v))
    return str(value)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _metric_key(key: str) -> str:
    return _truncate(_BAD_KEY_CHARS.sub("_", str(key)), MAX_KEY_LENGTH)


def filter_literal(value: str) -> str:
    """A single-quoted string literal for MLflow's search filter syntax."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
