"""The base of every recipe section, the field types sections share, and the walk over a section's fields."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, PlainValidator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _threshold(value: Any) -> float | str:
    if value == "auto":
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 2:
        return float(value)
    raise ValueError("must be a distance d = 1 - cos strictly between 0 and 2, or auto (measured for the embedder)")


#: A distance threshold on d = 1 - cos in [0, 2], or `auto`: measured once per run for the recipe's embedder
#: (rwml_lite/thresholds.py).
Threshold = Annotated[float | Literal["auto"], PlainValidator(_threshold)]


def describe_fields(recipe: Section) -> list[tuple[str, Any, str]]:
    """(dotted key, value, description) for every leaf field, in schema order."""
    rows: list[tuple[str, Any, str]] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            key = f"{prefix}{name}"
            if isinstance(value, BaseModel):
                walk(value, key + ".")
            else:
                rows.append((key, value, field.description or ""))

    walk(recipe, "")
    return rows
