"""A board evaluation of a registered version: `python -m webui.evaljob eval CONFIG models:/NAME@ALIAS`
(or models:/NAME/VERSION), run as a board job in its own process.

The version is downloaded from the registry, then it and its base model (the version's lineage tag)
are scored by the evaluate step on CONFIG's eval set and benchmark tasks, each as a model of its own
(the step's base scoring, cached per model and eval set). The table beside them holds the registry's
champion when its recorded scores come from the same eval set and settings (ftcore.evaluate.compare).
It is written to results.md beside CONFIG and printed.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from ftcore.config import PipelineConfig, load_config
from ftcore.errors import ConfigError, FtflowError, ModelNotAvailableError

VERSION_REF = re.compile(r"^models:/(?P<name>[^@/\s]+)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")
RESULTS = "results.md"


def parse_ref(source: str) -> tuple[str, str | None, str | None]:
    """(model name, alias, version number) of models:/NAME@ALIAS or models:/NAME/VERSION."""
    found = VERSION_REF.match(source.strip())
    if not found:
        raise ConfigError(f"evaluate: '{source}' is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return found["name"], found["alias"], found["version"]


def find_version(cfg: PipelineConfig, source: str) -> Any:
    """The MLflow model version `source` names, in the registry of cfg (registry.tracking_uri)."""
    from mlflow.exceptions import MlflowException

    from ftcore import registry, tracking

    name, alias, number = parse_ref(source)
    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    db = tracking.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise ModelNotAvailableError(f"evaluate: {source}: no registry at {uri} yet")
    client = tracking.get_client(uri)
    try:
        if alias:
            version = registry.get_version_by_alias(client, name, alias)
        else:
            version = client.get_model_version(name, str(number))
    except MlflowException:
        version = None
    if version is None:
        raise ModelNotAvailableError(f"evaluate: {source} does not exist in {uri}")
    return version


def _download(cfg: PipelineConfig, version: Any, folder: Path) -> Path:
    """The version's Hugging Face folder under `folder` (downloaded once; a temp folder renamed)."""
    from ftcore import registry, tracking

    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    target = folder / f"{version.name}-v{version.version}"
    if not target.is_dir():
        tmp = folder / f".{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # our own leftover of a killed download
        tmp.mkdir(parents=True)
        local = registry.download_source(uri, version.source, tmp)  # e.g. tmp/artifacts/model
        tmp.rename(target)
        return target / local.relative_to(tmp)
    mlmodel = next(target.rglob("MLmodel"), None)  # an MLflow model: its Hugging Face folder is model/
    return mlmodel.parent / "model" if mlmodel is not None else target


def _score(cfg: PipelineConfig, ref: str, revision: str | None, template: str | None) -> tuple[Any, Any]:
    """(eval artifact, model artifact): `ref` scored on cfg's eval set as a model of its own."""
    from ftcore import steps

    model_cfg = cfg.model.model_copy(
        update={"name_or_path": ref, "revision": revision, "adapter_name_or_path": None}
    )
    update: dict[str, Any] = {"model": model_cfg, "eval": cfg.eval.model_copy(update={"enabled": True})}
    if template:
        update["data"] = cfg.data.model_copy(update={"template": template})
    scored = cfg.model_copy(update=update)
    model = steps.fetch_model(scored)
    data = steps.preprocess(scored, model, steps.fetch_dataset(scored))
    return steps.evaluate(scored, model, data, None), model


def _own(metrics: dict[str, float]) -> dict[str, float]:
    return {k.removeprefix("base/"): v for k, v in metrics.items() if k.startswith("base/")}


def evaluate_version(cfg: PipelineConfig, source: str, folder: Path) -> str:
    """Markdown: the version beside its base model and the champion, on cfg's eval set and tasks."""
    from ftcore import registry
    from ftcore.evaluate.compare import Column, champion_column, comparison_table
    from ftcore.steps.preprocess import resolve_template

    version = find_version(cfg, source)
    local = _download(cfg, version, folder)
    base_ref = version.tags.get(f"{registry.TAG_PREFIX}base_model") or cfg.model.name_or_path
    revision = version.tags.get(f"{registry.TAG_PREFIX}base_model_revision") or None
    base_eval, base_model = _score(cfg, base_ref, revision, None)
    # the version is scored under its base model's template, so both read the same conversations
    named = cfg.model_copy(update={"model": cfg.model.model_copy(update={"name_or_path": base_ref})})
    template = resolve_template(named, base_model)
    tuned_eval, _ = _score(cfg, str(local), None, template)
    identity = {k: str(base_eval.metadata.get(k, "")) for k in ("eval_fingerprint", "eval_config")}
    in_registry = cfg.model_copy(
        update={"registry": cfg.registry.model_copy(update={"model_name": version.name, "enabled": True})}
    )
    columns = [Column(f"base ({base_ref})", _own(base_eval.metadata["metrics"]))]
    champion = champion_column(in_registry, identity)
    if champion is not None:
        columns.append(champion)
    columns.append(Column(f"{source} (v{version.version})", _own(tuned_eval.metadata["metrics"])))
    head = [
        f"# Evaluation of {source} (version {version.version})",
        "",
        f"- eval set: `{identity['eval_fingerprint'][:16]}`, settings `{identity['eval_config'][:16]}`",
        f"- champion ({version.name}@{registry.CHAMPION}): "
        + (champion.title.removeprefix("champion ") if champion else "none"),
        "- better value in **bold**",
        "",
    ]
    return "\n".join([*head, ""]) + comparison_table(columns)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "eval":
        print("usage: python -m webui.evaljob eval CONFIG models:/NAME@ALIAS", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config_path = Path(args[1])
    (config_path.parent / RESULTS).unlink(missing_ok=True)  # not shown as this evaluation's
    try:
        report = evaluate_version(load_config(str(config_path)), args[2], config_path.parent)
    except FtflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tmp = config_path.parent / f".{RESULTS}.tmp"
    tmp.write_text(report, encoding="utf-8")
    tmp.replace(config_path.parent / RESULTS)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
