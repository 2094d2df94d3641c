"""`ft data check`: what the pipeline will make of every configured dataset, row by row, before any
training: rows read, kept, truncated and dropped (with each reason counted), and the token lengths
of prompt and response under the job's chat template.

It reads rows with the same loader and on_error rule as fetch_dataset, and cuts them with the same
functions as preprocess (infer_seqlen / encode_sft_example), so its counts are the pipeline's.
Nothing is dropped silently: a dataset left with no row says why (LLaMA-Factory's "Cannot find
valid samples", with the reasons).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcore.config.pipeline import PipelineConfig
from ftcore.data.loader import RowStats, has_response, iter_rows
from ftcore.data.processor import ProcessContext, data_kind, encode_sft_example, infer_seqlen

NO_RESPONSE_LEFT = "no response token within cutoff_len"


@dataclass
class DatasetCheck:
    """One dataset's counts and token lengths (prompt, response) of the rows that are kept."""

    name: str
    split: str
    stats: RowStats
    truncated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    first_dropped: dict[str, str] = field(default_factory=dict)
    prompt_lens: list[int] = field(default_factory=list)
    response_lens: list[int] = field(default_factory=list)
    template: str | None = None

    @property
    def kept(self) -> int:
        return self.stats.kept - sum(self.dropped.values())

    def drop(self, reason: str, where: str) -> None:
        self.dropped[reason] += 1
        self.first_dropped.setdefault(reason, where)

    def reasons(self) -> dict[str, int]:
        """Every reason a row was not kept: bad rows skipped (on_error: skip) and rows cut away."""
        out = {f"bad row: {r}": n for r, n in self.stats.skipped.items()}
        return {**out, **self.dropped}

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "split": self.split,
            "template": self.template,
            "rows": self.stats.read,
            "kept": self.kept,
            "truncated": self.truncated,
            "dropped": sum(self.reasons().values()),
            "dropped_by_reason": self.reasons(),
            "empty_response": self.stats.empty,
            "prompt_tokens": percentiles(self.prompt_lens),
            "response_tokens": percentiles(self.response_lens),
        }


def percentiles(values: list[int]) -> dict[str, int]:
    """p50 / p95 / max (nearest rank), zeros for no values."""
    if not values:
        return {"p50": 0, "p95": 0, "max": 0}
    ordered = sorted(values)

    def rank(q: float) -> int:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.5), "p95": rank(0.95), "max": ordered[-1]}


def _lengths(row: dict[str, Any], kind: str, ctx: ProcessContext) -> tuple[int, int, bool]:
    """(prompt tokens, response tokens, whether a response token is left within cutoff_len) of a
    row, as the kind's processor builds it (prompt = everything not trained on)."""
    tpl, tok, cutoff = ctx.template, ctx.tokenizer, ctx.cutoff_len
    system, tools, messages = row.get("system"), row.get("tools"), row["messages"]
    if kind == "pt":
        return len(tok.encode(messages[0]["content"], add_special_tokens=False)) if messages else 0, 0, True
    if kind == "sft":
        pairs = tpl.encode_multiturn(tok, messages, system, tools)
        _, _, kept = encode_sft_example(pairs, cutoff, ctx.data.train_on_prompt, ctx.data.mask_history)
        return sum(len(s) for s, _ in pairs), sum(len(t) for _, t in pairs), kept > 0
    if kind == "pairwise":
        prompt, chosen = tpl.encode_oneturn(tok, [*messages, row["chosen"]], system, tools)
        _, rejected = tpl.encode_oneturn(tok, [*messages, row["rejected"]], system, tools)
        response = max(len(chosen), len(rejected))
    elif messages[-1]["role"] in ("assistant", "function"):
        prompt, reply = tpl.encode_oneturn(tok, messages, system, tools)
        response = len(reply)
    else:  # a prompt-only row (ppo / grpo)
        prompt, response = tpl.encode_prompt(tok, messages, system, tools), 0
    _, target = infer_seqlen(len(prompt), response, cutoff)
    return len(prompt), response, target > 0 or response == 0


def check_dataset(cfg: PipelineConfig, name: str, split: str, ctx: ProcessContext | None) -> DatasetCheck:
    """Read and validate every row of `name` (on_error as configured: a bad row is an error naming
    file and row, or skipped and counted), then measure each under the template when `ctx` is given."""
    kind = data_kind(cfg.train.stage)
    result = DatasetCheck(name, split, RowStats())
    rows = iter_rows(
        cfg.resolve_input(cfg.data.dataset_dir),
        name,
        cfg.data.max_samples,
        kind,
        cfg.data.on_error,
        result.stats,
    )
    for where, row in rows:
        if ctx is None:  # validation and counts only
            continue
        prompt, response, left = _lengths(row, kind, ctx)
        if kind != "pt" and prompt + response > ctx.cutoff_len:
            result.truncated += 1
        if kind == "sft" and not left:
            result.drop(NO_RESPONSE_LEFT, where)
            continue
        if not has_response(row, kind) and kind == "pt":
            result.drop("empty text", where)
            continue
        result.prompt_lens.append(prompt)
        result.response_lens.append(response)
    return result


def check_data(cfg: PipelineConfig, image: Path | None = None) -> list[DatasetCheck]:
    """Every dataset of the job (train, then eval), measured under the job's template; writes the
    token-length histogram to `image` when given."""
    from ftcore.data.template import get_template
    from ftcore.modeling import load_tokenizer
    from ftcore.steps.fetch import fetch_model
    from ftcore.steps.preprocess import resolve_template

    model = fetch_model(cfg)
    template_name = resolve_template(cfg, model)
    template = get_template(template_name)
    tokenizer = load_tokenizer(model.path, cfg.model.trust_remote_code)
    template.check_tokenizer(tokenizer)
    ctx = ProcessContext(tokenizer, template, cfg.data.cutoff_len, cfg.data)
    checks = [check_dataset(cfg, name, "train", ctx) for name in cfg.data.dataset]
    checks += [check_dataset(cfg, name, "eval", ctx) for name in cfg.data.eval_dataset]
    series: dict[str, list[int]] = {}
    for check in checks:
        check.template = template_name
        series[f"{check.name} ({check.split}) prompt"] = check.prompt_lens
        series[f"{check.name} ({check.split}) response"] = check.response_lens
    if image is not None:
        from ftcore.plots import plot_length_histogram

        plot_length_histogram(series, cfg.data.cutoff_len, image)
    return checks


def format_check(check: DatasetCheck) -> list[str]:
    """The lines `ft data check` prints for one dataset."""
    info = check.as_dict()
    lines = [
        f"dataset '{check.name}' ({check.split}): rows {info['rows']}, kept {info['kept']}, "
        f"truncated {info['truncated']}, dropped {info['dropped']}"
    ]
    for reason, count in info["dropped_by_reason"].items():
        first = check.first_dropped.get(reason) or check.stats.first.get(reason.removeprefix("bad row: "), "")
        lines.append(f"  dropped {count} x {reason}" + (f" (first: {first})" if first else ""))
    if check.stats.empty:
        lines.append(
            f"  {check.stats.empty} kept rows have an empty response (they teach only the end-of-turn token)"
        )
    p, r = info["prompt_tokens"], info["response_tokens"]
    under = f" under template {check.template}" if check.template else ""
    lines.append(
        f"  tokens{under}: prompt p50 {p['p50']} / p95 {p['p95']} / max {p['max']}; "
        f"response p50 {r['p50']} / p95 {r['p95']} / max {r['max']}"
    )
    if not info["kept"]:
        why = "; ".join(f"{n} x {reason}" for reason, n in info["dropped_by_reason"].items()) or "no rows"
        lines.append(f"  no valid samples: every row of '{check.name}' was dropped ({why})")
    return lines
