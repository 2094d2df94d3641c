"""English / Chinese text of the board. English comes from the schema (field paths and descriptions)
and the board's own words below; Chinese from zh.yaml, a translation table kept as data, falling back
to English for anything it does not name."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from webui.schema import FieldSpec

LANGUAGES = ("en", "zh")

UI_EN = {
    "title": "ftflow board",
    "language": "Language",
    "general": "General",
    "train": "Train",
    "evaluate": "Evaluate",
    "chat": "Chat",
    "export": "Export",
    "registry": "Registry",
    "more": "More settings",
    "preview": "Preview YAML and command",
    "save": "Save config",
    "load": "Load config",
    "config_path": "Config file path",
    "start": "Start",
    "stop": "Stop (checkpoint kept)",
    "resume": "Resume",
    "refresh": "Refresh",
    "status": "Status",
    "log": "Log",
    "loss": "Loss curve",
    "links": "Links",
    "dataset_preview": "Dataset preview (rendered by the template)",
    "model_filter": "Filter the model catalogue by family / tag",
    "family": "Family",
    "tags": "Tags",
    "job": "Job",
    "run_eval": "Evaluate",
    "results": "Results",
    "load_model": "Load model",
    "unload_model": "Unload model",
    "system_prompt": "System prompt",
    "message": "Message",
    "send": "Send",
    "clear": "Clear",
    "max_new_tokens": "Max new tokens",
    "temperature": "Temperature",
    "top_p": "Top-p",
    "run_export": "Export",
    "model_card": "Model card",
    "model_name": "Model name",
    "versions": "Versions",
    "promote": "Promote (through the gate)",
    "rollback": "Roll back",
    "version": "Version",
    "invalid": "These fields are invalid",
    "yaml": "YAML",
    "command": "The equivalent ft command",
    "chat_source": "Model: a board job, models:/NAME@ALIAS or a running ft serve (http://host:port/v1)",
    "backend": "Backend",
    "conversation": "Conversation",
    # for the Evaluate area and the Run-on switch (helper A's branch): wrap them in form.text(key, ...)
    "eval_source": "Model to evaluate",
    "eval_sets": "Eval set",
    "run_on": "Run on",
    "token_lengths": "Token lengths",
    "serve_settings": "Serving settings (ft serve)",
    # messages ({names} are filled in)
    "saved": "saved {path}",
    "stopping": "stopping {name}",
    "not_running": "{name}: not running",
    "no_job": "no job",
    "chat_starting": "starting `ft serve --backend vllm` for {source} (on CPU about half a minute)...",
    "chat_loaded": "loaded `{path}` as {name} ({backend})",
    "chat_endpoint": "endpoint {url} (model {model})",
    "chat_unloaded": "no model loaded",
    "chat_no_model": "(load a model first)",
    "chat_empty": "(empty answer: the model ended at once)",
    "vllm_missing": "vLLM is not installed here",
    "no_export": "no export folder (see the log)",
    "state.running": "running",
    "state.completed": "completed",
    "state.failed": "failed",
    "state.stopped": "stopped",
    "state.ended": "ended",
    "step": "step",
    "eta": "ETA",
    # accordion titles: the config's sub-sections
    "group.train.lora": "LoRA",
    "group.train.freeze": "Freeze (partial-parameter tuning)",
    "group.train.quantization": "Quantization (QLoRA)",
    "group.train.galore": "GaLore",
    "group.train.apollo": "APOLLO",
    "group.train.badam": "BAdam",
    "group.train.speed": "Speed and memory",
    "group.train.pref": "Preference training (RM / DPO / KTO / ORPO / SimPO)",
    "group.train.rl": "RL (GRPO / PPO)",
    "group.train.distributed": "Distributed training",
}


def lang_code(value: str | None) -> str:
    """en or zh, from the language switch's value (English / 中文) or a code."""
    return "zh" if value and (value.startswith("中") or value == "zh") else "en"


@cache
def _zh() -> dict:
    return yaml.safe_load((Path(__file__).parent / "zh.yaml").read_text(encoding="utf-8"))


def ui(key: str, lang: str) -> str:
    """The board's own word `key` in `lang` (English when the table lacks it); a `group.` or `state.`
    key without an entry (a new sub-section, a new state) shows its name."""
    english = UI_EN.get(key, key.partition(".")[2] or key)
    if lang == "zh":
        return _zh()["ui"].get(key, english)
    return english


def label(spec: FieldSpec, lang: str) -> str:
    entry = _zh()["fields"].get(spec.path, {}) if lang == "zh" else {}
    return entry.get("label") or spec.label


def info(spec: FieldSpec, lang: str) -> str:
    """Help text: the schema's description (the Chinese one where the table has it), and the path,
    which is the YAML key and the `ft` override."""
    entry = _zh()["fields"].get(spec.path, {}) if lang == "zh" else {}
    return f"{entry.get('info') or spec.description} [{spec.path}]"
