"""The board's form, derived from the config schema: one FieldSpec per leaf field of PipelineConfig.

Nothing is typed twice: the field's path, kind, choices, default and help text all come from the
pydantic models (ftcore/config), so a field added to a section appears on the board by itself. This
module knows no Gradio: it maps a config to form values and back, and pydantic's errors to fields.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from ftcore.config import PipelineConfig
from ftcore.config.base import Section

# kinds of form field: bool (checkbox), choice (dropdown), int / float (number), str (text),
# secret (password text), list (comma-separated text), yaml (a YAML value as text)
Kind = Literal["bool", "choice", "int", "float", "str", "secret", "list", "yaml"]
UNSET = ""  # the choice that means "None" in an optional dropdown


@dataclass(frozen=True)
class FieldSpec:
    """One leaf field of the config: where it is, how it is edited, what it means."""

    path: str  # dotted: train.lora.rank
    kind: Kind
    default: Any  # the form value of the schema default
    description: str
    optional: bool = False
    choices: tuple[Any, ...] = ()  # the Literal's values (choice kind)

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0] if "." in self.path else ""

    @property
    def group(self) -> str:
        """The sub-section it belongs to (train.lora), or its top section (train), or '' (name)."""
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""

    @property
    def label(self) -> str:
        return self.path.rsplit(".", 1)[-1].replace("_", " ")


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without None, whether None was allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else Union[tuple(args)]), optional  # noqa: UP007
    return annotation, False


def _kind(annotation: Any) -> tuple[Kind, tuple[Any, ...]]:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "choice", typing.get_args(annotation)
    if annotation is bool:
        return "bool", ()
    if annotation is int:
        return "int", ()
    if annotation is float:
        return "float", ()
    if annotation is str:
        return "str", ()
    if annotation is SecretStr:
        return "secret", ()
    if origin is list and typing.get_args(annotation) in ((str,),):
        return "list", ()
    return "yaml", ()  # lists of rules or numbers, dicts, bool | str: edited as YAML text


def _walk(model: type[BaseModel], prefix: str) -> list[FieldSpec]:
    out: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue  # base_dir: where the file was, not a setting
        path = f"{prefix}{name}"
        annotation, optional = _strip_none(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, Section):
            out += _walk(annotation, f"{path}.")
            continue
        kind, choices = _kind(info.annotation if kind_needs_raw(info.annotation) else annotation)
        if kind == "yaml":
            optional = False  # YAML text says null itself
        default = info.get_default(call_default_factory=True, validated_data={})
        spec = FieldSpec(path, kind, None, info.description or "", optional, choices)
        out.append(_with_default(spec, default))
    return out


def kind_needs_raw(annotation: Any) -> bool:
    """bool | str | None stays a union (edited as YAML); a plain Optional[X] is X."""
    stripped, _ = _strip_none(annotation)
    return typing.get_origin(stripped) in (Union, types.UnionType)


def _with_default(spec: FieldSpec, default: Any) -> FieldSpec:
    return FieldSpec(
        spec.path, spec.kind, to_form(spec, default), spec.description, spec.optional, spec.choices
    )


_FIELDS: list[FieldSpec] | None = None


def fields() -> list[FieldSpec]:
    """Every leaf field of PipelineConfig, in schema order."""
    global _FIELDS
    if _FIELDS is None:
        _FIELDS = _walk(PipelineConfig, "")
    return _FIELDS


def field_map() -> dict[str, FieldSpec]:
    return {spec.path: spec for spec in fields()}


# --- values: config value <-> form value ----------------------------------------------------------
def to_form(spec: FieldSpec, value: Any) -> Any:
    """The value a form component shows for a config value."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if spec.kind == "choice":
        return UNSET if value is None else str(value)
    if spec.kind == "list":
        return ", ".join(value or [])
    if spec.kind == "secret":
        return value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
    if spec.kind == "yaml":
        dumped = (
            [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
            if isinstance(value, list)
            else value
        )
        return yaml.safe_dump(dumped, default_flow_style=True, sort_keys=False, width=10_000).strip()
    if spec.kind == "str" or (spec.optional and spec.kind in ("int", "float")):
        return "" if value is None else str(value)  # an empty box is None
    return value


def from_form(spec: FieldSpec, value: Any) -> Any:
    """The config value of a form value; unparseable text raises ValueError naming the field."""
    if spec.kind == "choice":
        if value in (UNSET, None):
            return None
        return next((c for c in spec.choices if str(c) == str(value)), value)
    if spec.kind == "list":
        return [part.strip() for part in str(value or "").split(",") if part.strip()]
    if spec.kind == "yaml":
        try:
            return yaml.safe_load(value) if isinstance(value, str) else value
        except yaml.YAMLError as exc:
            raise ValueError(f"{spec.path}: not valid YAML: {exc}") from None
    if spec.kind in ("str", "secret"):
        text = "" if value is None else str(value)
        return None if spec.optional and text == "" else text
    if spec.kind in ("int", "float") and (value is None or str(value).strip() == ""):
        return None
    if spec.kind in ("int", "float") and isinstance(value, str):  # an optional number's text box
        try:
            return int(value) if spec.kind == "int" else float(value)
        except ValueError:
            raise ValueError(f"not a{'n integer' if spec.kind == 'int' else ' number'}: {value!r}") from None
    if spec.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _get(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def config_to_values(cfg: PipelineConfig) -> dict[str, Any]:
    """{path: form value} for every field of a config."""
    data = cfg.model_dump(exclude={"base_dir"})
    return {spec.path: to_form(spec, _get(data, spec.path)) for spec in fields()}


def values_to_dict(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The nested config dict of form values, and {path: message} for values that cannot be read."""
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    specs = field_map()
    for path, value in values.items():
        try:
            converted = from_form(specs[path], value)
        except ValueError as exc:
            errors[path] = str(exc)
            continue
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = converted
    return data, errors


class FormErrors(Exception):
    """Invalid form values, by field path (the schema's messages), caught before anything starts."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in errors.items()))
        self.errors = errors


def error_path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the nearest field path the form knows (a model validator's error:
    its section, e.g. `train`; an error inside a YAML field: that field)."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    paths = field_map()
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in paths:
            return ".".join(parts[:end])
    return ".".join(parts)


def values_to_config(values: dict[str, Any], base_dir: str | None = None) -> PipelineConfig:
    """The validated config of the form; FormErrors names each bad field with the schema's message."""
    data, errors = values_to_dict(values)
    if errors:
        raise FormErrors(errors)
    if base_dir:
        data["base_dir"] = base_dir
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        found: dict[str, str] = {}
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            found.setdefault(error_path(tuple(err["loc"])) or "config", message)
        raise FormErrors(found) from None
