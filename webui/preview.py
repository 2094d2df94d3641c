"""What the Train area shows before anything starts: the model choices, the dataset's first rows as
the chat template renders them, and `ft data check`'s counts and token lengths (ftcore.datacheck)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from ftcore.config import PipelineConfig
from ftcore.errors import FtflowError

PREVIEW_ROWS = 2


def model_choices(family: str | None = None, tag: str | None = None) -> list[str]:
    """Built-in tiny models (no filter) and catalogue names filtered by family / tag."""
    from ftcore.builtin import BUILTINS
    from ftcore.catalog import list_models

    builtins = [f"builtin:{name}" for name in BUILTINS] if not (family or tag) else []
    return builtins + [m.name for m in list_models(family=family, tag=tag)]


def _render(cfg: PipelineConfig, messages: list[dict[str, Any]]) -> str:
    """The conversation as the job's template renders it (the template's own Jinja); plain role lines
    when the template is 'auto' (it comes from the model, which is not fetched for a preview)."""
    if not cfg.data.template:
        return "\n".join(f"[{m['role']}] {m['content']}" for m in messages)
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from ftcore.data.template import get_template

    source = get_template(cfg.data.template).chat_template()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(source).render(messages=messages, add_generation_prompt=False)


def _raise(message: str) -> None:
    raise ValueError(message)


def dataset_preview(cfg: PipelineConfig, rows: int = PREVIEW_ROWS) -> str:
    """Markdown: the first rows of each training dataset, rendered by the template, or what is wrong."""
    from ftcore.data.loader import load_rows

    kind = {"pt": "pt", "rm": "pairwise", "dpo": "pairwise", "orpo": "pairwise", "simpo": "pairwise"}.get(
        cfg.train.stage, "kto" if cfg.train.stage == "kto" else "sft"
    )
    out = [f"template: `{cfg.data.template or 'auto (the model’s own)'}`"]
    for name in cfg.data.dataset:
        try:
            found = load_rows(cfg.resolve_input(cfg.data.dataset_dir), name, rows, kind)
            texts = [_render(cfg, row["messages"] + _answer(row)) for row in found]
        except (FtflowError, ValueError) as exc:
            out.append(f"**{name}**: {exc}")
            continue
        out.append(f"**{name}**")
        out += [f"<pre>{html.escape(text)}</pre>" for text in texts]
    return "\n\n".join(out)


def _answer(row: dict[str, Any]) -> list[dict[str, Any]]:
    chosen = row.get("chosen")
    return [chosen] if isinstance(chosen, dict) else []


def data_stats(cfg: PipelineConfig) -> tuple[str, Path | None]:
    """(markdown, histogram PNG) of `ft data check` for the job's datasets: rows, kept, truncated,
    dropped by reason, p50 / p95 / max prompt and response tokens under the job's template. A bad
    dataset raises its DataError / ConfigError (file and row named), as `ft data check` does."""
    from ftcore.datacheck import check_data
    from webui.jobs import board_dir

    image = board_dir() / "data_check" / f"{cfg.name}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    checks = check_data(cfg, image)
    lines = [
        "| dataset | split | rows | kept | truncated | dropped | prompt tokens p50 / p95 / max "
        "| response tokens p50 / p95 / max |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for check in checks:
        info = check.as_dict()
        p, r = info["prompt_tokens"], info["response_tokens"]
        lines.append(
            f"| {check.name} | {check.split} | {info['rows']} | {info['kept']} | {info['truncated']} "
            f"| {info['dropped']} | {p['p50']} / {p['p95']} / {p['max']} "
            f"| {r['p50']} / {r['p95']} / {r['max']} |"
        )
        notes += [f"- {check.name}: dropped {n} x {why}" for why, n in info["dropped_by_reason"].items()]
        if not info["kept"]:
            notes.append(f"- **{check.name}: no valid samples** (every row was dropped)")
    template = checks[0].template if checks else cfg.data.template
    head = f"`ft data check` (template `{template}`, cutoff_len {cfg.data.cutoff_len})"
    return "\n".join([head, "", *lines, *(["", *notes] if notes else [])]), image if image.is_file() else None
