"""Reading a recipe: YAML files (with `extends`), `key.sub=value` overrides, validation, and pydantic's report
turned into sentences that name each field, value and what is allowed."""

from __future__ import annotations

import copy
import difflib
import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rwml_lite.config.envs import DEFAULT_ENV, ENVIRONMENTS, _env_name
from rwml_lite.config.recipe import Recipe
from rwml_lite.errors import RwmlError


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a YAML recipe, apply `key.sub=value` overrides, validate; errors name the field."""
    return build_recipe(read_recipe_yaml(Path(path)), overrides, str(path))


def read_recipe_yaml(path: Path) -> dict:
    """The recipe's mapping. `extends: OTHER.yaml` (a path beside this file) starts from that recipe
    and changes only what this file sets, section by section, so that a study recipe is its
    training recipe plus a few lines instead of a copy that drifts."""
    chain = [data for _, data in _extends_chain(path)]
    merged = chain[-1]
    for data in reversed(chain[:-1]):
        merged = _merged(merged, data)
    return merged


def recipe_files(path: Path) -> list[Path]:
    """The recipe file and the files it extends, nearest first: the files `read_recipe_yaml` reads (each
    parsed once, `_yaml`), with its checks."""
    return [file for file, _ in _extends_chain(path)]


def _extends_chain(path: Path) -> list[tuple[Path, dict]]:
    """(file, its mapping without `extends`) for the recipe and every file it extends, nearest first."""
    chain: list[tuple[Path, dict]] = []
    seen: list[Path] = []  # the files before the current one: `extends` may not lead back to them
    while True:
        data = _read_mapping(path)
        chain.append((path, {k: v for k, v in data.items() if k != "extends"}))
        parent = data.get("extends")
        if parent is None:
            return chain
        base = path.parent / str(parent)
        if base.resolve() in seen:
            raise RwmlError(f"Recipe {path}: `extends: {parent}` leads back to itself.")
        seen.append(path.resolve())
        path = base


def _read_mapping(path: Path) -> dict:
    """One recipe file's mapping, as its own (a copy: the parse is shared)."""
    if not path.is_file():
        raise RwmlError(
            f"Recipe file {path} does not exist. Pass a path to a YAML recipe or the name of a shipped "
            f"recipe (`rwml-lite recipes` lists them)."
        )
    try:
        data = copy.deepcopy(_yaml(path.read_text()))
    except yaml.YAMLError as e:
        raise RwmlError(f"Recipe {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RwmlError(
            f"Recipe {path} must be a YAML mapping of sections (model:, env:, ...), not {type(data).__name__}."
        )
    return data


@functools.lru_cache(maxsize=64)
def _yaml(text: str) -> Any:
    """A recipe file's YAML, parsed once per content: `load_recipe`, then `recipe_files` and `marked_lines` for
    the same recipe, parse each file once."""
    return yaml.safe_load(text) or {}


def marked_lines(path: Path) -> list[str]:
    """Where a recipe leaves the paper, in its own words: every field line of it (and of the recipes it extends,
    farthest first) marked [ours] or [demo] in its comment, as `file: line`."""
    return [
        f"{file.name}: {line.strip()}"
        for file in reversed(recipe_files(path))
        for line in file.read_text().splitlines()
        if ("[ours" in line or "[demo]" in line) and ":" in line.split("#")[0]
    ]


def _merged(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both else value
    return merged


def build_recipe(data: dict, overrides: list[str], source: str) -> Recipe:
    """Validate a recipe mapping after applying `key.sub=value` overrides to it."""
    data = copy.deepcopy(data)
    for item in overrides:
        _apply_override(data, item)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RwmlError(_explain(e, source=source)) from None


def _apply_override(data: dict, item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise RwmlError(f"Override {item!r} must look like key.sub=value, e.g. grpo.learning_rate=5e-6.")
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RwmlError(
                f"Override {item!r}: `{'.'.join(parts[: i + 1])}` is a value, not a section, so it has no `{parts[i + 1]}`."
            )
        node = child
    node[parts[-1]] = yaml.safe_load(raw)


def _explain(error: ValidationError, source: str) -> str:
    """Turn pydantic's report into sentences that name each field, value and what is allowed."""
    lines = []
    for err in error.errors():
        path = err["loc"]
        shown = _shown(path)
        loc = ".".join(map(str, shown))
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            section_path, key = path[:-1], str(path[-1])
            allowed = sorted(_fields_at(section_path))
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean `{'.'.join([*map(str, shown[:-1]), close[0]])}`?" if close else ""
            where = f" (env.name {path[1]})" if shown != path else ""
            lines.append(f"unknown key `{loc}`{where}.{hint} Allowed keys here: {', '.join(allowed)}.")
        elif err["type"] == "missing":
            lines.append(f"`{loc}` is required: {_description(path)}")
        elif err["type"] == "literal_error":
            lines.append(f"`{loc}` = {value!r} is not allowed; allowed values: {err['ctx']['expected']}.")
        elif err["type"] == "union_tag_not_found":
            lines.append(
                f"`{loc}` = {value!r} is not a section; write it as `env: {{name: tau2, ...}}` (or `env.name=...`)."
            )
        elif err["type"] == "union_tag_invalid":
            lines.append(
                f"`{loc}.name` = {_env_name(value)!r} is not allowed; allowed values: {', '.join(ENVIRONMENTS)}."
            )
        elif not loc or (err["type"] == "value_error" and isinstance(value, dict)):
            # a check across sections, or of a whole section: its message names the fields, or gets the section
            said = err["msg"].removeprefix("Value error, ")
            lines.append(said + "." if not loc or said.startswith(loc + ".") else f"`{loc}`: {said}.")
        else:
            lines.append(f"`{loc}` = {value!r} is invalid: {err['msg'].removeprefix('Value error, ')}.")
    return f"Recipe {source} has {len(lines)} problem(s): " + " ".join(lines)


def _shown(path: tuple) -> tuple:
    """A location as the recipe spells it: pydantic puts the env section's kind (its tag) after `env`."""
    return (path[0], *path[2:]) if len(path) > 1 and path[0] == "env" and path[1] in ENVIRONMENTS else path


def _section_class(path: tuple) -> type[BaseModel] | None:
    cls: type[BaseModel] = Recipe
    parts = [str(p) for p in path]
    while parts:
        part = parts.pop(0)
        if cls is Recipe and part == "env":  # the union: the next part is the environment's tag
            tag = parts.pop(0) if parts and parts[0] in ENVIRONMENTS else DEFAULT_ENV
            cls = ENVIRONMENTS[tag]
            continue
        field = cls.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        cls = field.annotation
    return cls


def _fields_at(path: tuple) -> list[str]:
    cls = _section_class(path)
    return list(cls.model_fields) if cls else []


def _description(path: tuple) -> str:
    cls = _section_class(path[:-1])
    field = cls.model_fields.get(str(path[-1])) if cls else None
    return field.description if field and field.description else ""


def get_dotted(data: dict, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data
