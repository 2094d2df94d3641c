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
}


@cache
def _zh() -> dict:
    return yaml.safe_load((Path(__file__).parent / "zh.yaml").read_text(encoding="utf-8"))


def ui(key: str, lang: str) -> str:
    """The board's own word `key` in `lang` (English when the table lacks it)."""
    if lang == "zh":
        return _zh()["ui"].get(key, UI_EN[key])
    return UI_EN[key]


def label(spec: FieldSpec, lang: str) -> str:
    entry = _zh()["fields"].get(spec.path, {}) if lang == "zh" else {}
    return entry.get("label") or spec.label


def info(spec: FieldSpec, lang: str) -> str:
    """Help text: the schema's description (the Chinese one where the table has it), and the path,
    which is the YAML key and the `ft` override."""
    entry = _zh()["fields"].get(spec.path, {}) if lang == "zh" else {}
    return f"{entry.get('info') or spec.description} [{spec.path}]"
