"""The comparison table: base, current champion and candidate on one eval set, one row per metric.

The evaluate step writes it (champion at evaluation time) and the promotion report uses the same
table (champion at promotion time), so both read alike. A champion's numbers are shown only when its
recorded eval set and eval settings (`ftflow.eval_fingerprint` / `ftflow.eval_config` tags) equal this
evaluation's: numbers from another eval set are not comparable, and the table says so instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ftcore import registry, tracking
from ftcore.config.pipeline import PipelineConfig

log = logging.getLogger("ftcore.evaluate")

LOWER_IS_BETTER_SUFFIXES = ("loss", "perplexity", "rejected_reward")


def lower_is_better(metric: str) -> bool:
    """Losses and perplexity go down as a model improves; every other metric (ROUGE, BLEU, accuracy) up."""
    return metric.lower().endswith(LOWER_IS_BETTER_SUFFIXES)


@dataclass
class Column:
    """One model's scores; `scores` is None when they cannot be shown (then `note` says why)."""

    title: str
    scores: Mapping[str, float] | None
    note: str = ""


def comparison_table(columns: Sequence[Column]) -> str:
    """Markdown: one row per metric, a column per model, the better value in bold.

    "Better" follows `lower_is_better`; a value is bold when it is the best of two or more shown and
    not every shown value is equal.
    """
    names = sorted({name for c in columns if c.scores for name in c.scores})
    if not names:
        return ""
    lines = [
        "| metric | better | " + " | ".join(c.title for c in columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for name in names:
        values = [c.scores.get(name) if c.scores else None for c in columns]
        shown = [v for v in values if v is not None]
        lower = lower_is_better(name)
        best = (min if lower else max)(shown) if len(shown) > 1 and len(set(shown)) > 1 else None
        cells = [_cell(v, c, best) for v, c in zip(values, columns, strict=True)]
        lines.append(f"| {name} | {'lower' if lower else 'higher'} | " + " | ".join(cells) + " |")
    notes = [f"- {c.title}: {c.note}" for c in columns if c.note]
    return "\n".join([*lines, *(["", *notes] if notes else [])]) + "\n"


def _cell(value: float | None, column: Column, best: float | None) -> str:
    if value is None:
        return "n/a" if column.scores is None else ""
    text = f"{value:.6g}"
    return f"**{text}**" if best is not None and value == best else text


def recorded_scores(tags: Mapping[str, str], who: str = "tuned") -> dict[str, float]:
    """Scores a registered version records, by plain metric name: its own (`metric.tuned/*` tags) or
    its base model's (`who="base"`)."""
    prefix = f"{who}/"
    metrics = registry.metrics_from_tags(tags)
    return {name.removeprefix(prefix): value for name, value in metrics.items() if name.startswith(prefix)}


def champion_column(cfg: PipelineConfig, identity: Mapping[str, str]) -> Column | None:
    """The registry's current champion as a column: its recorded scores when they come from the eval
    set and settings `identity` describes (eval_fingerprint, eval_config), else a note saying they do
    not. None when the registry is off, its store does not exist yet, or there is no champion."""
    if not cfg.registry.enabled:
        return None
    uri = tracking.resolve_tracking_uri(cfg.registry.tracking_uri, cfg.workdir_path)
    db = tracking.sqlite_path(uri)
    if db is not None and not db.is_file():
        return None  # no store yet: nothing registered, and nothing is created here
    from mlflow.exceptions import MlflowException

    try:
        champion = registry.get_version_by_alias(
            tracking.get_client(uri), cfg.registry.model_name, registry.CHAMPION
        )
    except MlflowException as exc:
        log.warning("[evaluate] could not read the champion from %s: %s", uri, exc)
        return None
    if champion is None:
        return None
    title = f"champion v{champion.version}"
    for tag, key, what in (
        (registry.EVAL_FINGERPRINT_TAG, "eval_fingerprint", "eval set"),
        (registry.EVAL_CONFIG_TAG, "eval_config", "eval settings"),
    ):
        theirs = champion.tags.get(tag)
        if theirs != identity.get(key):
            recorded = f"`{theirs[:12]}`" if theirs else "none recorded"
            mine = identity.get(key, "")[:12]
            note = f"scored on another {what} ({tag} {recorded}, this evaluation `{mine}`): not comparable"
            return Column(title, None, note)
    return Column(title, recorded_scores(champion.tags), "scores recorded on the registered version")


def eval_report(
    cfg: PipelineConfig,
    identity: Mapping[str, str],
    results: Mapping[str, Mapping[str, float]],
    samples: int,
) -> str:
    """comparison.md of an evaluation: base, the champion at evaluation time and this job's model."""
    columns = []
    if "base" in results:
        columns.append(Column(f"base ({cfg.model.name_or_path})", results["base"]))
    champion = champion_column(cfg, identity)
    if champion is not None:
        columns.append(champion)
    if "tuned" in results:
        columns.append(Column("candidate (this job)", results["tuned"]))
    eval_set, settings = identity.get("eval_fingerprint", "")[:16], identity.get("eval_config", "")[:16]
    lines = [
        f"# Evaluation of {cfg.name}",
        "",
        f"- eval set: `{eval_set}`, settings `{settings}`, {samples} generated answers",
        f"- champion ({cfg.registry.model_name}@{registry.CHAMPION}) at evaluation time: "
        + (champion.title.removeprefix("champion ") if champion else "none"),
        "- better value in **bold**",
        "",
        comparison_table(columns),
    ]
    return "\n".join(lines)
