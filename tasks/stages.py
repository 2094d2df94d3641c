"""One Prefect task per pipeline stage. Each body calls one ftcore function and returns its manifest."""

from __future__ import annotations

from prefect import task

from ftcore import stages
from ftcore.artifacts import Artifact
from ftcore.config.pipeline import PipelineConfig
from ftcore.stages import keys
from ftcore.stages.preprocess import resolve_template
from ftcore.tracking import resolve_tracking_uri
from tasks.common import cache_key, ftcore_logs, retry_unless_user_error

# JSON, not pickle: cached results are plain manifests, and nothing unpickles files from disk.
_CACHED = {"persist_result": True, "result_serializer": "json", "retry_condition_fn": retry_unless_user_error}


@task(
    name="fetch_model",
    retries=2,
    retry_delay_seconds=5,
    cache_key_fn=cache_key("fetch_model", keys.fetch_model_key),
    **_CACHED,
)
def fetch_model(cfg: PipelineConfig) -> Artifact:
    with ftcore_logs():
        return stages.fetch_model(cfg)


@task(
    name="fetch_dataset",
    retries=1,
    cache_key_fn=cache_key("fetch_dataset", keys.fetch_dataset_key),
    **_CACHED,
)
def fetch_dataset(cfg: PipelineConfig) -> Artifact:
    with ftcore_logs():
        return stages.fetch_dataset(cfg)


@task(
    name="preprocess",
    cache_key_fn=cache_key(
        "preprocess", lambda c, m, d: keys.preprocess_key(c, m, d, resolve_template(c, m))
    ),
    **_CACHED,
)
def preprocess(cfg: PipelineConfig, model: Artifact, dataset: Artifact) -> Artifact:
    with ftcore_logs():
        return stages.preprocess(cfg, model, dataset)


# A retry resumes from the last complete checkpoint (train.resume_from_checkpoint=auto).
@task(name="train", retries=1, cache_key_fn=cache_key("train", keys.train_key), **_CACHED)
def train(cfg: PipelineConfig, model: Artifact, data: Artifact) -> Artifact:
    with ftcore_logs():
        return stages.train(cfg, model, data)


@task(name="evaluate", cache_key_fn=cache_key("evaluate", keys.evaluate_key), **_CACHED)
def evaluate(cfg: PipelineConfig, model: Artifact, data: Artifact, trained: Artifact | None) -> Artifact:
    with ftcore_logs():
        return stages.evaluate(cfg, model, data, trained)


@task(name="merge", cache_key_fn=cache_key("merge", keys.merge_key), **_CACHED)
def merge(cfg: PipelineConfig, model: Artifact, trained: Artifact) -> Artifact:
    with ftcore_logs():
        return stages.merge(cfg, model, trained)


@task(
    name="register",
    retries=2,
    retry_delay_seconds=5,
    cache_key_fn=cache_key(
        "register",
        lambda c, m, e: keys.register_key(
            c, m, e, resolve_tracking_uri(c.registry.tracking_uri, c.workdir_path)
        ),
    ),
    **_CACHED,
)
def register(cfg: PipelineConfig, merged: Artifact, evaluation: Artifact | None) -> Artifact:
    with ftcore_logs():
        return stages.register(cfg, merged, evaluation)
