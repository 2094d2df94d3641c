"""The model card (README.md) every export carries: where the model came from and how to run it.

The Hub shows it as the model's page; a reader of the folder alone can tell the base model and its
revision, the adapter, the data (by fingerprint), the config (by hash and the ftflow_config.yaml
beside it), the template, the eval scores when there are any, and how to load and serve the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

import ftcore

if TYPE_CHECKING:
    from ftcore.config.pipeline import PipelineConfig

CARD = "README.md"

# lineage fields in the order the card lists them, with their labels
LINEAGE_FIELDS = {
    "base_model_ref": "Base model",
    "base_model_revision": "Base model revision",
    "adapter_path": "Adapter",
    "finetuning_type": "Fine-tuning method",
    "template": "Chat template",
    "dataset_fingerprint": "Dataset fingerprint",
    "eval_fingerprint": "Eval set fingerprint",
    "config_hash": "Config hash",
    "mlflow_run_id": "MLflow run",
    "ftflow_version": "ftflow version",
}


def _hub_repo(ref: str | None) -> str | None:
    """The Hub repo id of a base model reference (hf:org/name[@rev] or org/name), for the card's header."""
    if not ref or ref.startswith(("builtin:", "ms:", "/", ".", "~")):
        return None
    repo = ref.removeprefix("hf:").split("@")[0]
    return repo if repo.count("/") == 1 else None


def _front_matter(lineage: dict[str, Any], cfg: PipelineConfig) -> str:
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation"}
    base = _hub_repo(lineage.get("base_model_ref"))
    if base:
        meta["base_model"] = base
    meta["tags"] = [
        "ftflow",
        cfg.train.stage,
        str(lineage.get("finetuning_type") or cfg.train.finetuning_type),
    ]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`" if text else "-"


def _table(rows: dict[str, Any], header: tuple[str, str]) -> list[str]:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {name} | {_value(value)} |" for name, value in rows.items()]
    return lines


def _metric(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def card_text(
    cfg: PipelineConfig, lineage: dict[str, Any], metrics: dict[str, Any] | None, extra: dict[str, Any] | None
) -> str:
    """The card's markdown; `extra` adds rows to the export table (a quantizer, its bits, ...)."""
    from ftcore.steps.register import config_hash

    lineage = {"config_hash": config_hash(cfg), "ftflow_version": ftcore.__version__, **lineage}
    rows = {label: lineage[key] for key, label in LINEAGE_FIELDS.items() if lineage.get(key) is not None}
    method = lineage.get("finetuning_type") or cfg.train.finetuning_type
    lines = [_front_matter(lineage, cfg), f"# {cfg.name}", ""]
    lines += [
        f"Fine-tuned with ftflow ({cfg.train.stage}, {method}) "
        f"from `{lineage.get('base_model_ref') or cfg.model.name_or_path}`. The full job config is "
        "`ftflow_config.yaml` beside this card.",
        "",
        "## Lineage",
        "",
        *_table(rows, ("what", "value")),
        "",
        "## Export",
        "",
        *_table(
            {"dtype": cfg.export.dtype, "max shard size (GB)": cfg.export.export_size, **(extra or {})},
            ("setting", "value"),
        ),
        "",
        "## Evaluation",
        "",
    ]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_metric(value)} |" for name, value in sorted(metrics.items())]
    else:
        lines.append(
            "Not evaluated in this job (eval.enabled was off, or the model was exported on its own)."
        )
    template = lineage.get("template")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("PATH")',
        'model = AutoModelForCausalLM.from_pretrained("PATH")',
        'messages = [{"role": "user", "content": "Hi"}]',
        'ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")',
        "print(tokenizer.decode(model.generate(**ids, max_new_tokens=64)[0]))",
        "```",
        "",
        "The tokenizer's chat template"
        + (f" is ftflow's `{template}` template, the one training used; " if template else " and ")
        + "generation_config.json lists its stop tokens.",
        "",
        "Serve it behind an OpenAI-compatible API: `ft serve PATH` (vLLM when installed, else transformers),",
        "or `python -m vllm.entrypoints.openai.api_server --model PATH`.",
    ]
    if template:
        lines += [
            "",
            "With Ollama: `ollama create NAME -f Modelfile` in this folder, then `ollama run NAME`.",
        ]
    return "\n".join(lines) + "\n"


def write_model_card(
    out_dir: Path,
    cfg: PipelineConfig,
    lineage: dict[str, Any],
    metrics: dict[str, Any] | None,
    extra: dict[str, Any] | None,
) -> Path:
    """Write `out_dir`/README.md for the model in `out_dir` (merged or quantized); returns its path."""
    path = Path(out_dir) / CARD
    path.write_text(card_text(cfg, lineage, metrics, extra), encoding="utf-8")
    return path
