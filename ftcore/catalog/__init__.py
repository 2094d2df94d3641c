"""The model catalogue (models.yaml): LLaMA-Factory's model names -> hub repo ids, template, tags.

Users coming from LLaMA-Factory name models the way its web UI does (`Qwen2.5-7B-Instruct`); the
catalogue turns such a name into a hub reference (ftcore.hub.expand_ref) and a default chat
template, and `ft models` lists it. Kept as data so adding a model is one YAML entry.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CATALOG_FILE = Path(__file__).parent / "models.yaml"
HUBS = ("huggingface", "modelscope")


@dataclass(frozen=True)
class CatalogModel:
    """One catalogue entry."""

    name: str
    family: str
    template: str | None
    hf: str | None
    ms: str | None
    size: str | None
    tags: list[str] = field(default_factory=list)

    def repo(self, hub: str) -> str | None:
        """The repo id on `hub` (huggingface | modelscope), None when it is not published there."""
        return self.hf if hub == "huggingface" else self.ms


@functools.cache
def load_catalog() -> dict[str, CatalogModel]:
    """Every catalogue entry by name, in file order."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~5x faster on 700 entries
    raw = yaml.load(CATALOG_FILE.read_text(encoding="utf-8"), Loader=loader) or {}  # a safe loader
    return {
        name: CatalogModel(
            name=name,
            family=entry["family"],
            template=entry.get("template"),
            hf=entry.get("hf"),
            ms=entry.get("ms"),
            size=entry.get("size"),
            tags=list(entry.get("tags") or []),
        )
        for name, entry in raw.items()
    }


def find_model(name: str) -> CatalogModel | None:
    """The entry called `name` (exact, else case-insensitive), or None."""
    catalog = load_catalog()
    if name in catalog:
        return catalog[name]
    lowered = {key.lower(): entry for key, entry in catalog.items()}
    return lowered.get(name.lower())


def suggest(name: str, limit: int = 5) -> list[str]:
    """Catalogue names close to `name`, for 'did you mean' in errors."""
    names = list(load_catalog())
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=limit, cutoff=0.6)
    return [by_lower[c] for c in close]


def list_models(
    family: str | None = None, tag: str | None = None, search: str | None = None
) -> list[CatalogModel]:
    """Catalogue entries filtered like `ft models`: `family` matches a family name or its start
    (case-insensitive: 'qwen2' gives Qwen2 and Qwen2.5), `tag` one of the tags, `search` any
    substring of the name or the repo ids."""
    picked = []
    for entry in load_catalog().values():
        if family and not entry.family.lower().startswith(family.lower()):
            continue
        if tag and tag.lower() not in (t.lower() for t in entry.tags):
            continue
        haystack = " ".join(filter(None, (entry.name, entry.hf, entry.ms))).lower()
        if search and search.lower() not in haystack:
            continue
        picked.append(entry)
    return picked


def all_tags() -> list[str]:
    """Every tag used in the catalogue, sorted."""
    return sorted({t for entry in load_catalog().values() for t in entry.tags})


def template_coverage() -> str:
    """How the catalogue's entries are checked, as the README states it: how many name a chat template
    ftflow has, and how many of those a template verified token for token against its family's
    official Jinja (tests/test_templates_families3.py keeps the README's sentence current)."""
    from ftcore.data.template import get_template, list_templates

    catalog = load_catalog()
    named = [m for m in catalog.values() if m.template]
    have = [m for m in named if m.template in set(list_templates())]
    verified = [m for m in have if get_template(m.template).verified_by]
    return (
        f"Of the {len(catalog)} catalogue entries, {len(named)} name a chat template: ftflow has it for "
        f"{len(have)}, verified token for token against the family's official Jinja for {len(verified)}."
    )
