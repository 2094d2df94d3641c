"""The template families of ftcore/data/templates/more.yaml encode what each family's OFFICIAL Jinja
chat template renders (tests/data/chat_templates, sources in SOURCES-B.md), and the loader reads
every templates/*.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftcore.data import template as template_module
from ftcore.errors import ConfigError


def test_loader_reads_every_yaml_and_refuses_a_name_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    entry = 'format_system: "{content}\\n"\nformat_user: "U: {content}\\nA: "\n'
    entry += 'format_assistant: "{content}\\n"\n'
    (tmp_path / "a.yaml").write_text("one:\n  " + entry.replace("\n", "\n  "))
    (tmp_path / "b.yaml").write_text("two:\n  " + entry.replace("\n", "\n  "))
    (tmp_path / "notes.txt").write_text("not read")
    monkeypatch.setattr(template_module, "TEMPLATES_DIR", tmp_path)
    template_module._load_all.cache_clear()
    try:
        assert template_module.list_templates() == ["one", "two"]
        (tmp_path / "c.yaml").write_text("one:\n  " + entry.replace("\n", "\n  "))
        template_module._load_all.cache_clear()
        with pytest.raises(ConfigError, match=r"'one' is defined twice: in .*a\.yaml and in .*c\.yaml"):
            template_module.list_templates()
    finally:
        monkeypatch.undo()
        template_module._load_all.cache_clear()
    assert "qwen" in template_module.list_templates()
