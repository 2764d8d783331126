"""The small interface every environment implements, so collect and eval never see engines.

An environment is a plain Python object: `reset` starts one task and returns its first
observation, `step` applies one action. Tasks are named by string ids from `tasks(split)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


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
