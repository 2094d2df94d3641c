"""Recipes: several jobs run as one flow, later jobs taking earlier jobs' outputs (sft -> dpo, ...).

A recipe YAML has `name`, an optional `workdir` and `jobs`, in the order they run. Each job is a full
ftflow job config: inline (ftflow sections or LLaMA-Factory flat keys), a path to a config file, or
`{config: PATH, overrides: {dotted.key: value}}`. Any string field whose value is `job:<name>` or
`job:<name>/<artifact>` takes that earlier job's output (default artifact: its merged model), e.g.
`model.name_or_path: job:sft` or `train.pref.ref_model: job:sft`. The graph is checked here, at load
time: a reference to an unknown job, to the job itself, to a later job or around a cycle fails with
the file and line that holds it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ftcore.config.llamafactory import KEY_MAP, is_flat
from ftcore.config.loader import _DuplicateKey, _key_lines, _UniqueKeyLoader, load_config
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError

REF_PREFIX = "job:"
REF = re.compile(r"^job:(?P<job>[A-Za-z0-9_.-]+)(?:/(?P<artifact>[A-Za-z_]+))?$")
# what a reference can take from a job: its step outputs (ftcore.steps.table) that are models or
# model versions; `merged` (the deployable model folder) is the default
ARTIFACTS = ("merged", "trained", "quantized", "registered")
DEFAULT_ARTIFACT = "merged"
RECIPE_KEYS = {"name", "workdir", "jobs"}
JOB_FILE_KEYS = {"config", "overrides"}
JOB_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class JobRef:
    """`job` (the referring job) takes `artifact` of job `target` in its config field `field`."""

    job: str
    field: str
    target: str
    artifact: str
    where: str  # "file:line" of the reference, for errors


@dataclass
class Recipe:
    """A loaded, checked recipe: job configs in run order (references still unresolved) and the refs."""

    name: str
    workdir: str
    jobs: dict[str, PipelineConfig]
    refs: list[JobRef] = field(default_factory=list)
    source: str = "<recipe>"

    def refs_of(self, job: str) -> list[JobRef]:
        return [ref for ref in self.refs if ref.job == job]

    def upstream(self, job: str) -> list[str]:
        """The jobs `job` takes outputs from, in run order."""
        targets = {ref.target for ref in self.refs_of(job)}
        return [name for name in self.jobs if name in targets]

    def downstream(self, job: str) -> list[str]:
        """`job` and every job that depends on it, directly or not, in run order."""
        found = {job}
        for name in self.jobs:
            if found & set(self.upstream(name)):
                found.add(name)
        return [name for name in self.jobs if name in found]


def is_recipe(source: str | Path | dict[str, Any]) -> bool:
    """Whether a YAML file (or dict) is a recipe: a top-level `jobs` mapping (no job config has one)."""
    if isinstance(source, dict):
        return isinstance(source.get("jobs"), dict)
    path = Path(source)
    if not path.is_file() or path.suffix not in (".yaml", ".yml"):
        return False
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False  # load_config reports the YAML error with the file's name
    return isinstance(raw, dict) and isinstance(raw.get("jobs"), dict)


def load_recipe(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> Recipe:
    """Load and check a recipe from a YAML path or a dict. Overrides: `name=..`, `workdir=..` or
    `jobs.<job>.<dotted key>=value` (a key of that job's config, e.g. jobs.dpo.train.learning_rate=1e-5)."""
    if isinstance(source, dict):
        raw, where, base, lines = source, "<recipe>", Path.cwd(), {}
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            raw = yaml.load(text, Loader=_UniqueKeyLoader)
        except _DuplicateKey as dup:
            raise ConfigError(
                f"{path}:{dup.line}: key '{dup.key}' is given twice (lines {dup.first} and {dup.line}); "
                "YAML would silently keep the last one: remove one of them"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        where, base, lines = str(path), path.resolve().parent, _key_lines(text)
    if not isinstance(raw, dict) or not isinstance(raw.get("jobs"), dict) or not raw["jobs"]:
        raise ConfigError(f"{where}: a recipe needs a `jobs` mapping (job name -> job config)")
    unknown = sorted(set(raw) - RECIPE_KEYS)
    if unknown:
        line = lines.get(unknown[0])
        raise ConfigError(
            f"{_at(where, line)}: unknown recipe key '{unknown[0]}'; "
            f"a recipe has {', '.join(sorted(RECIPE_KEYS))}"
        )
    top, per_job = _split_overrides(overrides or [], list(raw["jobs"]), where)
    name = str(top.get("name", raw.get("name") or (Path(where).stem if where != "<recipe>" else "recipe")))
    workdir = str(top.get("workdir", raw.get("workdir") or Path("runs") / name))
    jobs: dict[str, PipelineConfig] = {}
    refs: list[JobRef] = []
    for job, entry in raw["jobs"].items():
        job = str(job)
        line = lines.get(f"jobs.{job}")
        if not JOB_NAME.match(job):
            raise ConfigError(f"{_at(where, line)}: job name '{job}': use letters, digits, '.', '_' or '-'")
        cfg, origin = _load_job(job, entry, base, where, lines, per_job.get(job, []))
        cfg = _job_defaults(cfg, name, job, workdir)
        jobs[job] = cfg
        refs += _find_refs(job, cfg, origin, where, lines)
    recipe = Recipe(name=name, workdir=workdir, jobs=jobs, refs=refs, source=where)
    check_graph(recipe)
    _check_unique(recipe)
    return recipe


def _at(where: str, line: int | None) -> str:
    return f"{where}:{line}" if line else where


def _split_overrides(
    overrides: list[str], jobs: list[str], where: str
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    top: dict[str, Any] = {}
    per_job: dict[str, list[str]] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override '{item}' must look like jobs.JOB.section.key=value or name=...")
        if key in ("name", "workdir"):
            top[key] = value
            continue
        parts = key.split(".", 2)
        if len(parts) < 3 or parts[0] != "jobs":
            raise ConfigError(
                f"override '{item}': a recipe takes jobs.JOB.section.key=value (e.g. "
                f"jobs.{jobs[-1]}.train.learning_rate=1e-4), name=... or workdir=..."
            )
        if parts[1] not in jobs:
            raise ConfigError(f"override '{item}': {where} has no job '{parts[1]}'; jobs: {', '.join(jobs)}")
        per_job.setdefault(parts[1], []).append(f"{parts[2]}={value}")
    return top, per_job


@dataclass(frozen=True)
class _Origin:
    """Where a job's keys are written: its own config file (with its lines) or the recipe itself."""

    file: str | None  # the job's config file; None: inline in the recipe
    lines: dict[str, int]
    flat: bool
    override_keys: frozenset[str]  # dotted keys set by the recipe's `overrides:` for this job


def _load_job(
    job: str, entry: Any, base: Path, where: str, lines: dict[str, int], cli: list[str]
) -> tuple[PipelineConfig, _Origin]:
    """One job's config (refs still as strings), and where its keys were written."""
    context = f"{_at(where, lines.get(f'jobs.{job}'))}: job '{job}'"
    if isinstance(entry, str):
        entry = {"config": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{context}: give a job config (a mapping), a config file path or {{config: PATH}}")
    try:
        if "config" in entry:
            extra = sorted(set(entry) - JOB_FILE_KEYS)
            if extra:
                raise ConfigError(
                    f"'{extra[0]}' beside 'config': a job from a file takes only config and overrides "
                    "(dotted keys); put the whole job inline otherwise"
                )
            path = Path(str(entry["config"])).expanduser()
            if not path.is_absolute() and (base / path).is_file():
                path = base / path
            if not path.is_file():
                raise ConfigError(f"config: file {entry['config']} not found (relative to {base})")
            recipe_overrides = entry.get("overrides") or {}
            if not isinstance(recipe_overrides, dict):
                raise ConfigError("overrides: a mapping of dotted keys to values")
            items = [f"{key}={json.dumps(value)}" for key, value in recipe_overrides.items()]
            cfg = load_config(path, items + cli)
            text = path.read_text(encoding="utf-8")
            flat = isinstance(raw := yaml.safe_load(text), dict) and is_flat(raw)
            origin = _Origin(str(path), _key_lines(text), flat, frozenset(map(str, recipe_overrides)))
        else:
            cfg = load_config(dict(entry), cli)
            if cfg.base_dir is None:  # the job's relative inputs: beside the recipe
                cfg = cfg.model_copy(update={"base_dir": str(base)})
            origin = _Origin(None, {}, is_flat(entry), frozenset())
    except ConfigError as exc:
        if isinstance(entry, dict) and "config" not in entry:  # inline: the recipe's line of the key
            raise ConfigError(
                "\n".join(_inline_error(m, job, where, lines) for m in str(exc).splitlines())
            ) from None
        raise ConfigError(f"{context}: {exc}") from None
    return cfg, origin


def _inline_error(message: str, job: str, where: str, lines: dict[str, int]) -> str:
    """`<config>: ... 'train.stage' ...` of an inline job -> `recipe.yaml:LINE: job 'J': ...`."""
    rest = message.removeprefix("<config>: ")
    key = re.search(r"'([^']+)'", rest)
    line = (key and lines.get(f"jobs.{job}.{key[1]}")) or lines.get(f"jobs.{job}")
    return f"{_at(where, line)}: job '{job}': {rest}"


def _job_defaults(cfg: PipelineConfig, recipe: str, job: str, workdir: str) -> PipelineConfig:
    """A job's own name, workdir and registered model unless its config sets them: jobs of one recipe
    never share a workdir, MLflow run name or registered model."""
    update: dict[str, Any] = {}
    if "name" not in cfg.model_fields_set:
        update["name"] = f"{recipe}-{job}"
    if "workdir" not in cfg.model_fields_set:
        update["workdir"] = str(Path(workdir) / job)
    if "model_name" not in cfg.registry.model_fields_set:
        update["registry"] = cfg.registry.model_copy(update={"model_name": update.get("name", cfg.name)})
    return cfg.model_copy(update=update) if update else cfg


def _string_fields(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, value) of every string in a config dump, list items as path.N."""
    if isinstance(value, dict):
        return [
            pair for k, v in value.items() for pair in _string_fields(v, f"{prefix}.{k}" if prefix else k)
        ]
    if isinstance(value, list):
        return [pair for i, v in enumerate(value) for pair in _string_fields(v, f"{prefix}.{i}")]
    return [(prefix, value)] if isinstance(value, str) else []


def _find_refs(
    job: str, cfg: PipelineConfig, origin: _Origin, where: str, lines: dict[str, int]
) -> list[JobRef]:
    refs = []
    for dotted, value in _string_fields(cfg.model_dump(mode="json")):
        if not value.startswith(REF_PREFIX):
            continue
        at = _ref_location(job, dotted, origin, where, lines)
        match = REF.match(value)
        if match is None:
            raise ConfigError(
                f"{at}: {dotted}: '{value}' is not a job reference; write job:NAME or job:NAME/ARTIFACT "
                f"({', '.join(ARTIFACTS)})"
            )
        artifact = match["artifact"] or DEFAULT_ARTIFACT
        if artifact not in ARTIFACTS:
            raise ConfigError(
                f"{at}: {dotted}: job '{match['job']}' has no artifact '{artifact}'; "
                f"choose {', '.join(ARTIFACTS)}"
            )
        refs.append(JobRef(job, dotted, match["job"], artifact, at))
    return refs


def _ref_location(job: str, dotted: str, origin: _Origin, where: str, lines: dict[str, int]) -> str:
    """file:line of the key holding a reference: the recipe's overrides, inline job, or the job's file."""
    flat_key = {v: k for k, v in KEY_MAP.items()}.get(dotted, dotted) if origin.flat else dotted
    if origin.file is None:
        return _at(where, lines.get(f"jobs.{job}.{flat_key}") or lines.get(f"jobs.{job}"))
    for key in (dotted, flat_key):
        if key in origin.override_keys:
            return _at(where, lines.get(f"jobs.{job}.overrides.{key}"))
    return _at(origin.file, origin.lines.get(flat_key))


def check_graph(recipe: Recipe) -> None:
    """Every reference names an earlier job: unknown jobs, self references, cycles and forward
    references fail, naming the file and line of the reference."""
    order = list(recipe.jobs)
    for ref in recipe.refs:
        if ref.target not in recipe.jobs:
            raise ConfigError(
                f"{ref.where}: {ref.field}: unknown job '{ref.target}' in {recipe.source}; "
                f"jobs: {', '.join(order)}"
            )
        if ref.target == ref.job:
            raise ConfigError(f"{ref.where}: {ref.field}: job '{ref.job}' refers to itself (a cycle)")
        cycle = _cycle(recipe, ref.target, ref.job, [ref.job, ref.target])
        if cycle:
            raise ConfigError(
                f"{ref.where}: {ref.field}: the jobs refer to each other in a cycle: {' -> '.join(cycle)}"
            )
        if order.index(ref.target) > order.index(ref.job):
            raise ConfigError(
                f"{ref.where}: {ref.field}: job '{ref.job}' takes an output of job '{ref.target}', "
                f"which is listed after it; jobs run in the order listed"
            )


def _cycle(recipe: Recipe, start: str, goal: str, path: list[str]) -> list[str] | None:
    """A path of references from `start` back to `goal`, if any (depth first over the refs)."""
    for ref in recipe.refs_of(start):
        if ref.target == goal:
            return [*path, goal]
        if ref.target in recipe.jobs and ref.target not in path:
            found = _cycle(recipe, ref.target, goal, [*path, ref.target])
            if found:
                return found
    return None


def _check_unique(recipe: Recipe) -> None:
    """Two jobs with one name or workdir would overwrite each other's runs and artifacts."""
    for attr in ("name", "workdir_path"):
        seen: dict[Any, str] = {}
        for job, cfg in recipe.jobs.items():
            value = getattr(cfg, attr)
            if value in seen:
                raise ConfigError(
                    f"{recipe.source}: jobs '{seen[value]}' and '{job}' share the {attr.split('_')[0]} "
                    f"'{value}'; give each job its own"
                )
            seen[value] = job


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    """The recipe as a plain dict (jobs inline, as their validated configs): a flow parameter that
    load_recipe reads back."""
    return {
        "name": recipe.name,
        "workdir": recipe.workdir,
        "jobs": {
            job: cfg.model_dump(mode="json", exclude={"base_dir"}) | {"base_dir": cfg.base_dir}
            for job, cfg in recipe.jobs.items()
        },
    }
