"""The records that cross stages, as typed models, read and written only here.

An episode (collect, eval and the policy stage write it; build, evaluate, study and the policy update
read it) holds its steps; a world-model triplet (build writes it; the filter, RWML, WM SFT and eval
read it) is one valid step with its history and prompt. Each line carries `schema` (records.SCHEMA),
so a later version can read old runs, and the files stay readable by `datasets.load_dataset("json")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from rwml_lite.errors import RwmlError
from rwml_lite.records import SCHEMA, JsonlAppender, iter_jsonl, write_jsonl


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_version: int = Field(SCHEMA, alias="schema")

    def line(self) -> dict:
        return self.model_dump(by_alias=True, exclude_none=True)


class StepRecord(BaseModel):
    """One agent turn: what it saw, wrote and did, and what the environment answered."""

    model_config = ConfigDict(extra="forbid")
    observation: str
    completion: str  # the whole reply, reasoning included (what the policy stage trains)
    action: str | None = None  # what reached the environment; None when the reply held no action
    next_observation: str
    valid: bool
    kind: str = "observation"  # what answered: "observation", "user", "tool", "no_action"
    measure: Literal["embedding", "rouge"] = "embedding"  # how a world model's prediction of it is scored
    target: str | None = None  # what the world model predicts, where the environment says (tau2)
    reward: float = 0.0
    won: bool = False
    truncated: bool = False  # the reply was cut at the token budget
    prompt: list[dict] | None = None  # the agent's prompt, kept for the policy stage
    completion_ids: list[int] | None = None  # the reply's sampled token ids (its end token included), likewise

    @property
    def world_target(self) -> str:
        return self.next_observation if self.target is None else self.target


class EpisodeRecord(_Record):
    episode_id: str
    task_id: str
    split: str
    rollout: int
    task_type: str
    role: str
    goal: str
    world_goal: str
    steps: list[StepRecord]
    won: bool
    final: dict = {}  # what the environment said at the end (tau2: the score's parts, how it ended)

    @computed_field
    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @computed_field
    @property
    def num_invalid(self) -> int:
        return sum(not s.valid for s in self.steps)


class TripletRecord(_Record):
    """(history, action, real next observation) of one valid step, with its RWML prompt and WM-SFT target."""

    triplet_id: str
    episode_id: str
    task_id: str  # the game or task it was played in: the unit the train/validation split holds apart
    goal: str
    history: list[tuple[str, str]]
    observation: str
    action: str
    next_observation: str  # the world model's target form (tau2: masked tool replies + the task status)
    kind: str = "observation"
    measure: Literal["embedding", "rouge"] = "embedding"
    prompt: list[dict]
    target: str
    easy: bool | None = None  # the filter's verdict, on the triplets it kept


def _without_computed(line: dict) -> dict:
    return {k: v for k, v in line.items() if k not in ("num_steps", "num_invalid")}


def read_episodes(path: Path) -> list[EpisodeRecord]:
    return _read(path, lambda line: EpisodeRecord.model_validate(_without_computed(line)))


def append_episode(out: JsonlAppender, episode: EpisodeRecord) -> None:
    out.append(episode.line())


def read_triplets(path: Path) -> list[TripletRecord]:
    return _read(path, TripletRecord.model_validate)


def _read(path: Path, parse) -> list:
    """Every record of `path`; one that does not fit its model (a file of another version, edited by
    hand) is a clear error naming the file, the line and the field, not a traceback."""
    records = []
    for number, line in enumerate(iter_jsonl(path), 1):
        try:
            records.append(parse(line))
        except ValidationError as e:
            problem = e.errors()[0]
            field = ".".join(map(str, problem["loc"]))
            raise RwmlError(
                f"{path}, line {number}: `{field}`: {problem['msg']}. The file was written by another version of "
                f"rwml-lite or edited; rerun the stage that writes it (`rwml-lite train RECIPE --redo STAGE`)."
            ) from None
    return records


def write_triplets(path: Path, triplets: list[TripletRecord]) -> int:
    return write_jsonl(path, [t.line() for t in triplets])
