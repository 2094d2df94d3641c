"""Load a PipelineConfig from YAML (native or LLaMA-Factory flat) plus `key=value` overrides.

Errors name the file, the dotted field and, where the YAML has it, the line.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ftcore.config.llamafactory import KEY_MAP, default_names, flat_to_nested, is_flat, set_dotted
from ftcore.config.pipeline import PipelineConfig
from ftcore.errors import ConfigError


def load_config(
    source: str | Path | dict[str, Any] | PipelineConfig, overrides: list[str] | None = None
) -> PipelineConfig:
    """Build a validated PipelineConfig from a YAML path, a dict or a config, then apply overrides."""
    if isinstance(source, PipelineConfig):
        if not overrides:
            return source
        # python mode keeps SecretStr values as secrets (json mode would turn them into '**********')
        raw, name, base_dir, lines = source.model_dump(), "<config>", source.base_dir, {}
    elif isinstance(source, dict):
        raw, name, base_dir, lines = copy.deepcopy(source), "<config>", None, {}
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            raw = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
        except _DuplicateKey as dup:
            raise ConfigError(
                f"{path}:{dup.line}: key '{dup.key}' is given twice (lines {dup.first} and {dup.line}); "
                "YAML would silently keep the last one: remove one of them"
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if raw is None:
            raise ConfigError(
                f"{path} is empty: it names no model, data or training (see configs/quickstart.yaml)"
            )
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
        name, base_dir, lines = str(path), str(path.resolve().parent), _key_lines(text)

    flat = is_flat(raw)
    nested = flat_to_nested(raw, name, lines) if flat else raw
    for item in overrides or []:
        key, value = _parse_override(item)
        if flat and "." not in key and key in KEY_MAP:
            key = KEY_MAP[key]
        set_dotted(nested, key, value)
    if flat:
        default_names(nested, None if name == "<config>" else name)
    if base_dir and "base_dir" not in nested:
        nested["base_dir"] = base_dir
    try:
        return PipelineConfig.model_validate(nested)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, name, lines, flat)) from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, first: int, line: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first, self.line = key, first, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        prefix = getattr(node, "_ftflow_path", "")
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            dotted = f"{prefix}.{key}" if prefix else str(key)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(dotted, seen[key], line)
            except TypeError:  # an unhashable key: let the base class report it
                continue
            seen[key] = line
            value_node._ftflow_path = dotted  # type: ignore[attr-defined]
        return super().construct_mapping(node, deep=deep)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(
            f"override '{item}' must look like section.key=value (e.g. train.learning_rate=2e-4)"
        )
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has no key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key, value


def _key_lines(text: str) -> dict[str, int]:
    """Dotted key path -> 1-based line number, read from the YAML node tree."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                lines[dotted] = key_node.start_mark.line + 1
                walk(value_node, dotted)

    if root is not None:
        walk(root, "")
    return lines


def _format_validation(exc: ValidationError, source: str, lines: dict[str, int], flat: bool) -> str:
    reverse = {v: k for k, v in KEY_MAP.items()} if flat else {}
    messages = []
    for err in exc.errors():
        dotted = ".".join(str(part) for part in err["loc"])
        shown = reverse.get(dotted, dotted)
        line = lines.get(shown)
        where = f"{source}:{line}" if line else source
        if err["type"] == "extra_forbidden":
            messages.append(f"{where}: unknown config key '{shown}'")
        else:
            value = err.get("input")
            messages.append(f"{where}: invalid value for '{shown}' ({value!r}): {err['msg']}")
    return "\n".join(messages)


def dump_config(config: PipelineConfig) -> str:
    """The resolved config as YAML, as `ft config show` prints it and artifacts store it."""
    return yaml.safe_dump(config.model_dump(mode="json", exclude={"base_dir"}), sort_keys=False)
