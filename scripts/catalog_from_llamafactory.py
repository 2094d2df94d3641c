"""Regenerate ftcore/catalog/models.yaml from LLaMA-Factory's model list (its facts, our format).

Usage: python scripts/catalog_from_llamafactory.py CONSTANTS.py [OLDER_CONSTANTS.py ...] > models.yaml
Each file is a copy of LLaMA-Factory's src/llamafactory/extras/constants.py; models only in older
copies (families LLaMA-Factory has since dropped, e.g. Qwen1.5, Baichuan 2) are kept too. The
file is executed with its register_model_group replaced, so run this only on LLaMA-Factory's file.
"""

from __future__ import annotations

import re
import sys

import yaml

MARK = "register_model_group(\n    models="
SIZE = re.compile(r"^(\d+x)?\d+(\.\d+)?[BM]$|^E\d+B$", re.I)
ACTIVE = re.compile(r"^A\d+(\.\d+)?[BM]$")
TAG_WORDS = {
    "base": "Base",
    "chat": "Chat",
    "instruct": "Instruct",
    "thinking": "Thinking",
    "distill": "Distill",
    "math": "Math",
    "coder": "Coder",
    "code": "Coder",
    "vl": "VL",
    "vision": "VL",
    "moe": "MoE",
    "int4": "Int4",
    "int8": "Int8",
    "4bit": "Int4",
    "8bit": "Int8",
    "4bits": "Int4",
    "8bits": "Int8",
    "awq": "AWQ",
    "gptq": "GPTQ",
    "omni": "Omni",
    "audio": "Audio",
    "ocr": "OCR",
    "rl": "RL",
}


def groups(path: str) -> list[dict]:
    found: list[dict] = []
    with open(path, encoding="utf-8") as handle:
        code = handle.read()
    head, *calls = code.split(MARK)
    ns: dict = {}
    exec(compile(head, path, "exec"), ns)  # LLaMA-Factory's own constants file

    def register(models, template=None, multimodal=False):
        found.append({"template": template, "multimodal": multimodal, "models": models})

    ns["register_model_group"] = register
    exec(compile(MARK + MARK.join(calls), path, "exec"), ns)
    return found


def describe(name: str, template: str | None, multimodal: bool, sources: dict) -> dict:
    parts = name.split("-")
    cut = next((i for i, p in enumerate(parts) if SIZE.match(p) or ACTIVE.match(p)), len(parts))
    family_parts = [p for p in parts[:cut] if p.lower() not in TAG_WORDS] or parts[:1]
    tags = []
    for p in parts:
        tag = TAG_WORDS.get(p.lower())
        if tag and tag not in tags:
            tags.append(tag)
    low = name.lower()
    if any(w in low for w in ("codegemma", "codestral", "starcoder", "opencoder", "devstral", "codegeex")):
        tags.append("Coder")
    if multimodal and "VL" not in tags and "Omni" not in tags and "Audio" not in tags:
        tags.append("VL")
    if any(ACTIVE.match(p) for p in parts) or re.search(r"\d+x\d+B", name) or "MoE" in name:
        tags.append("MoE")
    if not {"Chat", "Instruct", "Thinking", "Distill"} & set(tags) and "Base" not in tags:
        tags.insert(0, "Base")
    entry = {"family": "-".join(family_parts), "template": template}
    for key in ("hf", "ms"):
        if sources.get(key):
            entry[key] = sources[key]
    size = next((p for p in parts if SIZE.match(p)), None)
    if size:
        entry["size"] = size
    entry["tags"] = list(dict.fromkeys(tags))
    return entry


def main(paths: list[str]) -> None:
    catalogue: dict[str, dict] = {}
    for path in paths:
        for group in groups(path):
            for name, sources in group["models"].items():
                if name in catalogue:
                    continue
                keyed = {str(getattr(k, "value", k)): v for k, v in sources.items()}
                catalogue[name] = describe(name, group["template"], group["multimodal"], keyed)
    yaml.safe_dump(catalogue, sys.stdout, sort_keys=False, allow_unicode=True, width=200)


if __name__ == "__main__":
    main(sys.argv[1:])
