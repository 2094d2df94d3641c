"""The pipeline's steps, defined once: the Prefect flow, `run_local` and the CLI all read this table.

A step names the ftcore function it runs, the artifacts it takes (outputs of earlier steps), the
artifact it makes, its cache key and when it is enabled. Adding a step (quantize, promote) is one
entry here plus its module; nothing else lists the steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ftcore.artifacts import Artifact, is_present
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError

log = logging.getLogger("ftcore.steps")


def _always(cfg: PipelineConfig) -> bool:
    return True


def _present(cfg: PipelineConfig, artifact: Artifact) -> bool:
    return is_present(artifact)


@dataclass(frozen=True)
class Step:
    """One pipeline step: `run(cfg, *inputs) -> Artifact`, keyed by `key(cfg, *inputs)`."""

    name: str
    run: Callable[..., Artifact]
    output: str
    inputs: tuple[str, ...] = ()
    # inputs that may be absent (passed as None): evaluate without a fine-tune scores the base alone
    optional: frozenset[str] = field(default_factory=frozenset)
    # optional inputs used when the pipeline makes them, but never run just for this step (`ft export`
    # does not evaluate; the full pipeline hands merge its eval scores for the model card)
    soft: frozenset[str] = field(default_factory=frozenset)
    # the cache key; None marks an action that runs every time (an alias move is not a cached result)
    key: Callable[..., str] | None = None
    enabled: Callable[[PipelineConfig], bool] = _always
    retries: int = 0
    retry_delay_s: float = 0.0
    # the finished result without running the step (`ft eval` / `ft export` never train)
    find: Callable[..., Artifact | None] | None = None
    missing_hint: str = ""
    # whether a cached result still exists (files on disk, a version in the registry)
    present: Callable[[PipelineConfig, Artifact], bool] = _present
    # a markdown file in the step's output folder (e.g. the eval comparison) shown in the Prefect UI
    markdown: str | None = None

    def args(self, outputs: dict[str, Artifact | None]) -> list[Artifact | None]:
        """This step's inputs from the outputs so far, in order; a missing required one is an error."""
        values = []
        for name in self.inputs:
            value = outputs.get(name)
            if value is None and name not in self.optional:
                raise ConfigError(f"step {self.name} needs the '{name}' artifact, which nothing made")
            values.append(value)
        return values


def _steps() -> tuple[Step, ...]:
    from ftcore import steps
    from ftcore.export import quantizers
    from ftcore.steps import keys
    from ftcore.steps.evaluate import COMPARISON
    from ftcore.steps.preprocess import resolve_template
    from ftcore.steps.register import assign_alias, is_registered
    from ftcore.tracking import resolve_tracking_uri

    def preprocess_key(cfg: PipelineConfig, model: Artifact, dataset: Artifact) -> str:
        return keys.preprocess_key(cfg, model, dataset, resolve_template(cfg, model))

    def register_key(
        cfg: PipelineConfig, merged: Artifact, evaluation: Artifact | None, quantized: Artifact | None
    ) -> str:
        uri = resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
        return keys.register_key(cfg, merged, evaluation, uri, quantized)

    def has_adapter(cfg: PipelineConfig) -> bool:  # a given adapter to use as it is, not to train on
        return bool(cfg.model.adapter_name_or_path) and not cfg.train.lora.train_adapter

    def registry_on(cfg: PipelineConfig) -> bool:
        return cfg.registry.enabled

    return (
        Step("fetch_model", steps.fetch_model, "model", key=keys.fetch_model_key, retries=2, retry_delay_s=5),
        Step("fetch_dataset", steps.fetch_dataset, "dataset", key=keys.fetch_dataset_key, retries=1),
        Step("preprocess", steps.preprocess, "tokenized", ("model", "dataset"), key=preprocess_key),
        # an adapter the user already has stands in for training (cheap: no cache entry)
        Step("adapter", steps.external_adapter, "trained", ("model",), enabled=has_adapter),
        Step(
            "train",
            steps.train,
            "trained",
            ("model", "tokenized"),
            key=keys.train_key,
            enabled=lambda cfg: not has_adapter(cfg),
            retries=1,  # a retry resumes from the last complete checkpoint
            find=steps.find_trained,
            missing_hint="train first (`ft train CFG`) or set model.adapter_name_or_path",
        ),
        Step(
            "evaluate",
            steps.evaluate,
            "eval",
            ("model", "tokenized", "trained"),
            optional=frozenset({"trained"}),
            key=keys.evaluate_key,
            enabled=lambda cfg: cfg.eval.enabled,
            markdown=COMPARISON,
        ),
        Step(
            "merge",
            steps.merge,
            "merged",
            ("model", "trained", "eval"),
            optional=frozenset({"eval"}),
            soft=frozenset({"eval"}),
            key=keys.merge_key,
        ),
        # merged -> quantized export; calibrates on the tokenized training rows unless told otherwise
        Step(
            "quantize",
            steps.quantize,
            "quantized",
            ("merged", "tokenized"),
            key=keys.quantize_key,
            enabled=lambda cfg: quantizers.enabled(cfg.export),
        ),
        # the export folder to the Hugging Face Hub, in one commit (an action: the Hub may have moved);
        # the quantized export when there is one, as LLaMA-Factory pushes it
        Step(
            "push",
            steps.push,
            "pushed",
            ("merged", "quantized"),
            optional=frozenset({"quantized"}),
            enabled=lambda cfg: bool(cfg.export.export_hub_model_id),
        ),
        Step(
            "register",
            steps.register,
            "registered",
            ("merged", "eval", "quantized"),
            optional=frozenset({"eval", "quantized"}),
            key=register_key,
            enabled=registry_on,
            retries=2,
            retry_delay_s=5,
            present=is_registered,
        ),
        # moving the alias is an action on every run, even when `register` came from cache
        Step(
            "alias",
            assign_alias,
            "registered",
            ("registered",),
            enabled=lambda cfg: registry_on(cfg) and bool(cfg.registry.alias),
        ),
        # the gate: `champion` moves to this version when registry.gate passes (uncached: it may have moved)
        Step(
            "promote",
            steps.promote,
            "promotion",
            ("registered",),
            enabled=lambda cfg: registry_on(cfg) and cfg.registry.promote,
        ),
    )


_TABLE: tuple[Step, ...] | None = None


def steps() -> tuple[Step, ...]:
    """Every step in pipeline order (built on first use: the step functions import lazily)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _steps()
    return _TABLE


def step_names() -> list[str]:
    return [step.name for step in steps()]


def get_step(name: str) -> Step:
    for step in steps():
        if step.name == name:
            return step
    raise ConfigError(f"unknown pipeline step '{name}'; steps: {', '.join(step_names())}")


def plan(cfg: PipelineConfig, until: str | None = None) -> list[Step]:
    """The enabled steps in order; with `until`, only those that step needs, and it last."""
    enabled = [step for step in steps() if step.enabled(cfg)]
    if until is None:
        return enabled
    target = get_step(until)
    if target not in enabled:  # e.g. `ft train` with an existing adapter: the step that stands in
        target = next((s for s in enabled if s.output == target.output), None)
        if target is None:
            raise ConfigError(f"step {until} is disabled by this config")
    head = enabled[: enabled.index(target) + 1]
    needed = set(target.inputs) - target.soft
    kept = [target]
    for step in reversed(head[:-1]):
        if step.output in needed:
            kept.append(step)
            needed.update(name for name in step.inputs if name not in step.soft)
    return list(reversed(kept))


def run_steps(
    cfg: PipelineConfig,
    planned: Sequence[Step],
    execute: Callable[[Step, PipelineConfig, list[Artifact | None]], Artifact],
    lookup: Iterable[str] = (),
) -> dict[str, Artifact]:
    """Walk `planned`, calling `execute` per step (in-process or as a Prefect task); outputs by name.

    Steps named in `lookup` are not run: their finished result is looked up (`Step.find`), and a
    missing one is left out, or is an error naming what to do when a later step needs it.
    """
    lookup = set(lookup)
    outputs: dict[str, Artifact | None] = {}
    for step in planned:
        args = step.args(outputs)
        if step.name in lookup and step.find is not None:
            found = step.find(cfg, *args)
            if found is None and any(
                step.output in later.inputs and step.output not in later.optional
                for later in planned[planned.index(step) + 1 :]
            ):
                raise ConfigError(f"no finished {step.name} result for this config: {step.missing_hint}")
            outputs[step.output] = found
            continue
        outputs[step.output] = execute(step, cfg, args)
    return {name: artifact for name, artifact in outputs.items() if artifact is not None}


def _execute_here(step: Step, cfg: PipelineConfig, args: list[Artifact | None]) -> Artifact:
    return step.run(cfg, *args)


def run_local(
    cfg: PipelineConfig, until: str | None = None, lookup: Iterable[str] = ()
) -> dict[str, Artifact]:
    """Run the pipeline's steps in this process (no Prefect), up to `until` when given."""
    from ftcore.steps.local import preflight

    planned, lookup = plan(cfg, until), set(lookup)
    # a looked-up step does not run: its checks (a trainable base, speed switches) do not apply
    preflight(cfg, [step.name for step in planned if step.name not in lookup])
    return run_steps(cfg, planned, _execute_here, lookup)
