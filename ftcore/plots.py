"""The loss-curve picture a training run leaves in MLflow (and beside its checkpoints)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def plot_loss_curve(history: list[dict[str, Any]], out_png: Path) -> Path:
    """Train (and eval) loss vs step from a transformers-style `state.log_history`, as a PNG.

    Uses the Agg canvas directly (no pyplot), so it works headless and touches no global backend.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train = _series(history, "loss")
    evals = _series(history, "eval_loss")
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if train:
        ax.plot([x for x, _ in train], [y for _, y in train], label="train loss", color="tab:blue")
    if evals:
        ax.plot(
            [x for x, _ in evals], [y for _, y in evals], label="eval loss", color="tab:orange", marker="o"
        )
    if not train and not evals:
        ax.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png


def _series(history: Iterable[Mapping[str, Any]], key: str) -> list[tuple[float, float]]:
    points = []
    for i, entry in enumerate(history):
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            points.append((float(entry.get("step", i)), float(value)))
    return points


def plot_length_histogram(series: Mapping[str, list[int]], cutoff_len: int, out_png: Path) -> Path:
    """Token-length histograms (one panel per series, e.g. each dataset's prompt and response)
    with the cutoff_len marked, so a user sees what truncation will cut."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(series)
    fig = Figure(figsize=(7, 2.2 * max(1, len(names))), dpi=100)
    FigureCanvasAgg(fig)
    for i, name in enumerate(names, start=1):
        ax = fig.add_subplot(max(1, len(names)), 1, i)
        values = series[name]
        if values:
            ax.hist(values, bins=min(50, max(5, len(set(values)))), color="tab:blue", alpha=0.8)
            ax.axvline(cutoff_len, color="tab:red", linestyle="--", label=f"cutoff_len {cutoff_len}")
            ax.legend(loc="upper right", fontsize="small")
        else:
            ax.text(0.5, 0.5, "no rows", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(f"{name} tokens ({len(values)} rows)", fontsize="small")
        ax.set_ylabel("rows")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, format="png")
    return out_png
