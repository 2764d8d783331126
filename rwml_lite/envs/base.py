"""The small interface every environment implements, so collect and eval never see engines, and the
`Benchmark` every benchmark declares beside it, so the core never names one.

An environment is a plain Python object: `reset` starts one task and returns its first
observation, `step` applies one action. Tasks are named by string ids from `tasks(split)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rwml_lite.config import EnvSettings
    from rwml_lite.schemas import EpisodeRecord


@dataclass
class Step:
    """What one action did. `valid` is False for an inadmissible action."""

    observation: str
    reward: float
    done: bool
    won: bool
    valid: bool
    info: dict = field(default_factory=dict)


class TextEnv(Protocol):
    #: One sentence telling the agent who it is; opens the agent and world-model prompts.
    role: str
    #: The goal of the current episode, set by `reset`.
    goal: str
    #: What the world-model prompt shows instead of `goal`, where the agent's instructions are not
    #: what predicting the environment needs (tau2: the policy, the tools and the customer's profile
    #: facts, not their intent). Environments without it use `goal`.
    world_goal: str

    def tasks(self, split: str) -> list[str]: ...

    def task_type(self, task_id: str) -> str:
        """The family a task belongs to, for per-type success rates."""
        ...

    def reset(self, task_id: str, seed: int) -> str: ...

    def step(self, action: str) -> Step: ...

    def admissible_actions(self) -> list[str] | None: ...

    def close(self) -> None: ...

    # Optional, for benchmarks that run their own conversation loop (tau2):
    # `agent_prompt() -> Messages`: the agent's prompt as the benchmark writes it (its system prompt, the
    #   conversation, the tools); the agent's whole reply, without its reasoning, is then the action;
    # `ended_at_reset: Step | None`: set by `reset` when the episode ended before the agent acted;
    # `end() -> dict`: stop an episode from outside (the rollout's turn cap) and return its final outcome.


#: A column of the paper's success table: (weight, which episodes) parts, averaged by weight.
Parts = list[tuple[float, Callable[["EpisodeRecord"], bool]]]


class Benchmark:
    """What the core asks of a benchmark besides its environment: how to make one, the paper's numbers and
    columns for it, and its own lines in report.md. Each benchmark module declares one (`BENCHMARK`) and
    `rwml_lite.envs.benchmark(name)` finds it, so that nothing outside rwml_lite/envs/ names a benchmark.
    The defaults fit a benchmark the paper did not run (the demo's TextWorldExpress)."""

    #: the env section's `name`
    name: str = ""
    #: the model the paper's numbers are for (None: the paper has none)
    paper_model: str | None = None
    #: the paper's main table: its columns, and method -> success % per column (Table 1)
    paper_columns: tuple[str, ...] = ()
    paper_rows: dict[str, tuple[float, ...]] = {}
    #: the paper's ablations (Table 4), AVG success % only
    paper_ablations: dict[str, float] = {}

    def make_env(self, settings: EnvSettings, max_steps: int, users: list | None) -> TextEnv:
        raise NotImplementedError

    def describe(self, settings: EnvSettings) -> str:
        """How report.md names the environment."""
        return self.name

    def columns(self, settings: EnvSettings, splits: list[str]) -> dict[str, Parts]:
        """The success columns of the study table: the paper's where it has them, else one per split."""
        return {split: [(1.0, lambda ep, s=split: ep.split == s)] for split in splits}

    def report_lines(self, settings: EnvSettings, splits: list[str], results: dict, labels: dict) -> list[str]:
        """Lines after report.md's evaluation table (the paper's weighting of the splits, where it has one)."""
        return []

    def report_section(self, settings: EnvSettings, results: dict) -> list[str] | None:
        """The benchmark's own section of report.md, or None for the generic success-by-task-type table."""
        return None

    def requirements(self) -> list[tuple[str, bool | None, str]]:
        """`rwml-lite doctor`'s rows for what the benchmark needs beyond the pins: (what, ok, detail or fix), ok None
        for an optional part that is absent."""
        return []

    def run_conversations(self, conversations: list) -> list:
        """Drive environments that converse with a simulated user side by side (envs whose `conversation`
        method exists); a benchmark without a user never gets here."""
        raise NotImplementedError(f"{self.name} has no simulated user")


def data_folder(variable: str, holds: str, fix: str) -> tuple[str, bool | None, str]:
    """doctor's row for a benchmark's data folder named by an environment variable, which must hold `holds`."""
    folder = os.environ.get(variable)
    if folder and (Path(folder) / holds).is_dir():
        return variable, True, folder
    if folder:
        return variable, False, f"{folder} has no {holds}/: {fix}"
    return variable, None, f"not set; only its benchmark's recipes need it: {fix}"
