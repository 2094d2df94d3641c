"""The base of every config section, shared by sections.py and the per-feature section modules."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


def _split_commas(value: object) -> object:
    """LLaMA-Factory and the command line write lists as 'a,b,c'."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A list of names that also accepts one comma-separated string.
NameList = Annotated[list[str], BeforeValidator(_split_commas)]


class Section(BaseModel):
    """Base for all config sections: unknown keys are errors, values are validated on assignment."""

    # coerce_numbers_to_str: `model.revision=20240101` on the command line is a revision, not an error
    # validate_default: a default is coerced like a value from YAML (an int default of a float field
    # becomes a float), so a config dumped and loaded again keys its steps the same
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        validate_default=True,
        protected_namespaces=(),
        coerce_numbers_to_str=True,
    )
