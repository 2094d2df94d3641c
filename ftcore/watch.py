"""What an event trigger watches: a job's data files and a registry alias, as a comparable snapshot.

A watcher run takes a snapshot, compares it with the one it stored last time and starts the
deployment it guards when something moved (flows/watch.py). The data snapshot is the fetch_dataset
fingerprint of each split: the files' content and the row selection, hashed without parsing a row,
so an edit to a data file (or a new file under the same name) is a change and a touch is not.
"""

from __future__ import annotations

from typing import Any

from ftcore.config.pipeline import PipelineConfig


def snapshot(cfg: PipelineConfig, data: bool = True, alias: str | None = None) -> dict[str, Any]:
    """{"data": {split: fingerprint}, "alias": {"name": "models:/M@A", "version": V}} of what is watched."""
    from ftcore import registry, tracking
    from ftcore.steps.keys import dataset_fingerprints

    found: dict[str, Any] = {}
    if data:
        found["data"] = dataset_fingerprints(cfg)
    if alias:
        uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
        version = registry.get_version_by_alias(tracking.get_client(uri), cfg.registry.model_name, alias)
        found["alias"] = {
            "name": registry.model_uri(cfg.registry.model_name, alias),
            "version": int(version.version) if version is not None else None,
        }
    return found


def changes(before: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """Why `now` differs from `before`, one reason per change; none for a first look (a baseline)."""
    if before is None:
        return []
    reasons = []
    for split, fingerprint in now.get("data", {}).items():
        if before.get("data", {}).get(split) != fingerprint:
            reasons.append(f"the {split} data changed")
    then, current = before.get("alias") or {}, now.get("alias") or {}
    if current and then.get("version") != current.get("version") and current.get("version") is not None:
        reasons.append(f"{current['name']} moved from version {then.get('version')} to {current['version']}")
    return reasons
