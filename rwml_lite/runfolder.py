"""The layout of a run folder, in one place, so every stage and the report agree on paths.

manifest.json               stage -> config key, status (written atomically)
recipe.yaml                 the validated recipe of the latest command
rollouts.jsonl              collect: one episode per line, appended as each ends
wm/train.jsonl wm/val.jsonl build: triplets (prompt + WM-SFT target)
wm/rwml.jsonl wm/filter.json filter: kept training triplets, easy fraction and counts;
wm/thresholds.json            the thresholds it measured (tau_d: auto) and their distances
checkpoints/<stage>/        filter, rwml, wm_sft, policy: checkpoint-N/ and the final adapter/
policy_rollouts/step-N.jsonl policy: the episodes each optimizer step trained on
metrics/<stage>.jsonl       every logged training metric
tensorboard/<stage>/        TensorBoard event files
eval/<variant>.json         eval: success, invalid-action rate, world-model score
eval/episodes_<variant>.jsonl, eval/wm_<variant>.jsonl   what the scores were computed from
report.md, plots/           the summary a user reads first
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError

from rwml_lite.errors import RwmlError
from rwml_lite.records import SCHEMA


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def rollouts(self) -> Path:
        return self.root / "rollouts.jsonl"

    def wm(self, name: str) -> Path:
        return self.root / "wm" / name

    def checkpoints(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def adapter(self, stage: str) -> Path:
        return self.checkpoints(stage) / "adapter"

    def policy_rollouts(self, step: int | None = None) -> Path:
        """The policy stage's episode files, one per optimizer step (the folder when `step` is None)."""
        folder = self.root / "policy_rollouts"
        return folder if step is None else folder / f"step-{step:05d}.jsonl"

    def metrics(self, stage: str) -> Path:
        return self.root / "metrics" / f"{stage}.jsonl"

    def tensorboard(self, stage: str) -> Path:
        return self.root / "tensorboard" / stage

    def eval(self, name: str) -> Path:
        return self.root / "eval" / name

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    def plot(self, name: str) -> Path:
        return self.root / "plots" / name


class _Stage(BaseModel):
    key: str
    config: dict
    started: str | None = None
    linked_from: str | None = None  # a study variant's stage linked from another run folder


class _Running(_Stage):
    status: Literal["running"]


class _Done(_Stage):
    status: Literal["done"]
    summary: dict
    finished: str | None = None
    seconds: float = 0.0  # the report and selftest read it


class _Manifest(BaseModel):
    """The manifest `pipeline.run` writes, as far as its readers use it unchecked (they index it as dicts): what
    they read is required, what they only show may be missing but must have its type."""

    schema_version: int = Field(alias="schema")
    stages: dict[str, Annotated[_Running | _Done, Field(discriminator="status")]]


def read_manifest(folder: RunFolder) -> dict:
    """The run folder's manifest (stage -> key, config, status, summary); an empty one before any stage ran. One
    that does not fit (edited, or written by another program) is a clear error naming the field."""
    if not folder.manifest.exists():
        return {"schema": SCHEMA, "stages": {}}
    text = folder.manifest.read_text()
    try:
        _Manifest.model_validate_json(text)
    except ValidationError as e:
        problem = e.errors()[0]
        field = ".".join(map(str, problem["loc"]))
        where = f"`{field}`: " if field else ""
        raise RwmlError(
            f"{folder.manifest}: {where}{problem['msg']}. It is not a manifest rwml-lite wrote (edited, or another "
            f"program's). Move it away, and the stages run again (collect and eval resume their episode files), or "
            f"keep this folder as it is and choose a new one (run.dir=runs/NEW)."
        ) from None
    return json.loads(text)
