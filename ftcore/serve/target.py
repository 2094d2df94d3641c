"""What `ft serve TARGET` serves: a job's config, a registry URI `models:/NAME@ALIAS`, or a model folder,
resolved to a local Hugging Face folder (plus LoRA adapters served unmerged)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ftcore.config.pipeline import PipelineConfig
from ftcore.config.sections import ServeConfig
from ftcore.errors import ConfigError, ModelNotAvailableError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger("ftcore.serve")

_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_LOCATION = "ftflow-served-from.json"  # in a downloaded version's folder: where its model files are


@dataclass
class ServeTarget:
    model_path: Path
    name: str  # the base model's name in requests
    loras: dict[str, Path] = field(default_factory=dict)
    serve: ServeConfig = field(default_factory=ServeConfig)
    log_dir: Path | None = None
    trust_remote_code: bool = False


def resolve_target(
    target: str, overrides: list[str] | None = None, tracking_uri: str | None = None
) -> ServeTarget:
    """The folder to serve for TARGET; a bad target is a ConfigError naming it, before any loading."""
    if target.startswith("models:/"):
        uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ConfigError(f"{target}: set MLFLOW_TRACKING_URI or --tracking-uri to say which registry")
        name, alias = _parse_model_uri(target)
        return ServeTarget(download_version(uri, name, alias), name)
    path = Path(target).expanduser()
    if path.is_file() and path.suffix in _CONFIG_SUFFIXES:
        from ftcore.config import load_config

        return _from_config(load_config(str(path), overrides or []), tracking_uri)
    if overrides:
        raise ConfigError(f"key=value overrides apply to a config file, not to {target}")
    if path.is_dir():
        check_model_dir(path, target)
        return ServeTarget(path.absolute(), path.absolute().name)
    raise ConfigError(
        f"serve target {target!r}: not a config file (.yaml), a models:/NAME@ALIAS URI or a model folder"
    )


def check_model_dir(path: Path, label: str) -> None:
    if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(
            f"{label} is a LoRA adapter: serve its base model with --lora NAME={label} "
            "(or merge it first: ft export)"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"{label}: no config.json, not a Hugging Face model folder")


def parse_loras(items: list[str], base_name: str) -> dict[str, Path]:
    """`--lora name=path` values: adapters served unmerged, picked by a request's `model` field."""
    loras: dict[str, Path] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ConfigError(f"--lora {item!r}: expected NAME=PATH")
        path = Path(value).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise ConfigError(f"--lora {name}: {path} has no adapter_config.json (not a LoRA adapter)")
        if name == base_name or name in loras:
            raise ConfigError(f"--lora {name}: the name is already taken; each model name must be unique")
        loras[name] = path.absolute()
    return loras


def _parse_model_uri(target: str) -> tuple[str, str]:
    name, sep, alias = target[len("models:/") :].partition("@")
    if not sep or not name or not alias or "/" in name:
        raise ConfigError(f"{target}: expected models:/NAME@ALIAS")
    return name, alias


def download_version(tracking_uri: str, name: str, alias: str) -> Path:
    """The version `name@alias` points at, downloaded once per version into FTFLOW_HOME/served."""
    from ftcore import registry, tracking

    tracking.check_reachable(tracking_uri)
    version = registry.get_version_by_alias(tracking.get_client(tracking_uri), name, alias)
    if version is None:
        raise ModelNotAvailableError(f"registry: models:/{name}@{alias} does not exist in {tracking_uri}")
    return fetch_version(tracking_uri, name, version, f"models:/{name}@{alias}")


def fetch_version(tracking_uri: str, name: str, version: ModelVersion, label: str) -> Path:
    """One model version's Hugging Face folder, downloaded once into FTFLOW_HOME/served (by version,
    not by alias: an alias that moves meanwhile does not change what is fetched)."""
    from ftcore import registry
    from ftcore.artifacts import atomic_dir, hash_json
    from ftcore.builtin import ftflow_home

    home = ftflow_home() / "served" / hash_json(tracking_uri)[:12] / f"{name}-v{version.version}"
    marker = home / _LOCATION
    if not marker.is_file():
        log.info("downloading %s (version %s)", label, version.version)
        with atomic_dir(home) as tmp:
            local = registry.download_source(tracking_uri, version.source, tmp)
            (tmp / _LOCATION).write_text(json.dumps({"path": str(local.relative_to(tmp))}))
    path = home / json.loads(marker.read_text())["path"]
    check_model_dir(path, label)
    return path


def _from_config(cfg: PipelineConfig, tracking_uri: str | None) -> ServeTarget:
    """A job's model: the registry version under serve.model_alias when it exists, else the job's own
    merged model from its workdir (an adapter kept unmerged is served on its base)."""
    from ftcore import registry, tracking

    common = {"serve": cfg.serve, "log_dir": cfg.workdir_path / "serve-logs"}
    common["trust_remote_code"] = cfg.model.trust_remote_code
    uri = tracking_uri or tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    name, alias = cfg.registry.model_name, cfg.serve.model_alias
    if cfg.registry.enabled and alias and _store_exists(uri):
        version = registry.get_version_by_alias(tracking.get_client(uri), name, alias)
        if version is not None:
            return ServeTarget(download_version(uri, name, alias), name, **common)
    from ftcore.steps import run_local

    try:
        outputs = run_local(cfg, until="merge", lookup=("train",))
    except ConfigError as exc:
        raise ConfigError(
            f"nothing to serve for job {cfg.name}: no models:/{name}@{alias} in {uri} and {exc}"
        ) from exc
    merged = outputs["merged"]
    if merged.kind == "adapter":  # export.merge: false
        base = Path(outputs["model"].path)
        return ServeTarget(base, cfg.model.name_or_path, {name: Path(merged.path)}, **common)
    return ServeTarget(Path(merged.path), name, **common)


def _store_exists(uri: str) -> bool:
    """A job's local sqlite store that was never created holds no versions (and is not created here)."""
    from ftcore import tracking

    db = tracking.sqlite_path(uri)
    return db is None or db.is_file()
