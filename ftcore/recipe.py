"""Running a recipe's jobs: checks before any job runs, and each job's `job:` references resolved to
its upstream jobs' finished artifacts (ftcore.config.recipe loads and checks the graph).

A merged model is handed on as a weights-only view of the upstream's merged folder (hard links, no
model card, no manifest), keyed on the merged *weights*: a later job's model fetch, and so its
training, re-runs when the upstream weights change, never because the upstream's evaluation
rewrote its model card.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ftcore.artifacts import MANIFEST, Artifact, atomic_dir, write_manifest
from ftcore.config.pipeline import PipelineConfig
from ftcore.config.recipe import JobRef, Recipe
from ftcore.errors import ConfigError

log = logging.getLogger("ftcore.recipe")

# files of a merged folder that describe it rather than make it: not part of the model handed on
DOCS = {MANIFEST, "README.md", "Modelfile", "ftflow_config.yaml"}
VIEW_STEP = "recipe_input"
# fields where an upstream job's base model stands in faithfully for its merged model (same kind of
# model: a causal LM with the same tokenizer) when a recipe is checked before anything runs; a job
# with another reference (a reward model, an adapter, a registry version) is checked when it starts
# (a reward model keeps its reference: preflight leaves `job:` references to check_recipe, which
# has checked that the upstream job makes that artifact)
STAND_IN_FIELDS = ("model.name_or_path", "train.pref.ref_model", "train.rl.reward_model")


def check_recipe(recipe: Recipe) -> None:
    """Before any job runs: each reference names an artifact its job makes (e.g. `quantized` only
    when that job quantizes), and every job whose inputs can be stood in for passes its preflight
    (its data, template and outputs), so a bad last job fails before the first one trains."""
    from ftcore.steps import plan, preflight

    for ref in recipe.refs:
        made = {step.output for step in plan(recipe.jobs[ref.target])}
        if ref.artifact not in made:
            raise ConfigError(
                f"{ref.where}: {ref.field}: job '{ref.target}' makes no '{ref.artifact}' artifact with its "
                f"config (it makes {', '.join(sorted(made))})"
            )
        upstream = recipe.jobs[ref.target]
        if (
            ref.artifact == "merged"
            and not upstream.export.merge
            and upstream.train.finetuning_type == "lora"
        ):
            raise ConfigError(
                f"{ref.where}: {ref.field}: job '{ref.target}' sets export.merge: false, so it makes "
                f"an adapter, not a model; merge it (export.merge: true), or"
                f" take job:{ref.target}/trained as model.adapter_name_or_path"
            )
    for job in recipe.jobs:
        stand_in = stand_in_config(recipe, job)
        if stand_in is not None:
            preflight(stand_in)


def stand_in_config(recipe: Recipe, job: str) -> PipelineConfig | None:
    """The job's config with each `job:X` (merged model) replaced by X's own base model, which has the
    tokenizer and architecture of what X will hand on: enough to check the job before X has run.
    None when a reference has no faithful stand-in (see STAND_IN_FIELDS)."""
    values: dict[str, Any] = {}
    for ref in recipe.refs_of(job):
        if ref.artifact != "merged" or ref.field not in STAND_IN_FIELDS:
            return None
        if ref.field == "train.rl.reward_model":
            continue
        upstream = stand_in_config(recipe, ref.target)
        if upstream is None:
            return None
        values[ref.field] = upstream.model.name_or_path
    return with_values(recipe.jobs[job], values)


def resolve_job(recipe: Recipe, job: str, outputs: dict[str, dict[str, Artifact]]) -> PipelineConfig:
    """The job's config with every reference replaced by its upstream's finished artifact: a path
    (merged: a weights-only view of it; trained; quantized) or a registry URI (registered)."""
    values = {ref.field: _value(recipe, ref, outputs) for ref in recipe.refs_of(job)}
    return with_values(recipe.jobs[job], values)


def _value(recipe: Recipe, ref: JobRef, outputs: dict[str, dict[str, Artifact]]) -> str:
    made = outputs.get(ref.target)
    if made is None:
        raise ConfigError(f"{ref.where}: {ref.field}: job '{ref.target}' has not run yet")
    artifact = made.get(ref.artifact)
    if artifact is None:
        raise ConfigError(
            f"{ref.where}: {ref.field}: job '{ref.target}' made no '{ref.artifact}' artifact "
            f"(it made {', '.join(sorted(made))})"
        )
    if ref.artifact == "merged" and artifact.kind == "merged" and artifact.metadata.get("weights_key"):
        return str(weights_view(recipe.jobs[ref.target], artifact))
    return artifact.path


def weights_view(upstream: PipelineConfig, merged: Artifact) -> Path:
    """The merged model without its docs, hard-linked (copied across file systems) into the upstream
    job's workdir as `recipe_input-<weights key>`: same bytes, and file times that change only with
    the weights. Made once per weights key; a folder at that place that ftflow did not make (it has
    no manifest) is refused, never replaced."""
    from ftcore.outputs import claim_output_dir
    from ftcore.steps.common import reuse

    key = merged.metadata["weights_key"]
    out = upstream.workdir_path / f"{VIEW_STEP}-{key[:12]}"
    done = reuse(out, key, VIEW_STEP)
    if done is not None:
        return out
    source = Path(merged.path)
    # a folder there that ftflow did not make (no manifest: not a view) is the user's: refused, kept
    claim_output_dir(out, f"recipe hand-over of job {upstream.name!r}")
    with atomic_dir(out) as tmp:
        for file in sorted(source.rglob("*")):
            rel = file.relative_to(source)
            if not file.is_file() or rel.name in DOCS or any(p.startswith(".") for p in rel.parts):
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(file, target)
            except OSError:
                shutil.copy2(file, target)  # keeps the file time
        write_manifest(
            tmp,
            Artifact(
                kind="model",
                path=str(out),
                fingerprint=key,
                metadata={"key": key, "merged_path": merged.path, "merged_fingerprint": merged.fingerprint},
            ),
        )
    log.info("[recipe] %s hands on its merged weights as %s", upstream.name, out)
    return out


def with_values(cfg: PipelineConfig, values: dict[str, Any]) -> PipelineConfig:
    """A copy of `cfg` with dotted fields (list items as path.N) set, validated again."""
    if not values:
        return cfg
    raw = cfg.model_dump()  # python mode: secrets stay secrets
    for dotted, value in values.items():
        node: Any = raw
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    raw["base_dir"] = cfg.base_dir
    return PipelineConfig.model_validate(raw)
