"""Play episodes: many at once, one batched generate call per turn, each episode saved as it ends.

Used by collect (the policy plays the training tasks) and by eval (the base and trained policies
play the evaluation tasks). Up to `parallel` episodes are live; every turn the prompts of all
live episodes go to the generator together, which is where batching pays on a GPU. An episode is
appended to its JSONL file the moment it ends, and episodes already in the file are skipped, so
a killed run resumes without losing or repeating an episode.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rwml_lite.config import AgentSettings
from rwml_lite.envs import Step, TextEnv
from rwml_lite.models import Generator, Sampling
from rwml_lite.prompts import agent_messages, parse_action
from rwml_lite.records import JsonlAppender, iter_jsonl

#: Recorded as the outcome of a turn without an action (the environment is not stepped, and the
#: agent sees the same observation again, after a history entry "(no action)").
NO_ACTION_FEEDBACK = "Invalid response: give exactly one admissible action inside <action>...</action>."


@dataclass(frozen=True)
class EpisodeSpec:
    episode_id: str
    task_id: str
    rollout: int
    seed: int


def episode_specs(task_ids: list[str], per_task: int, seed: int) -> list[EpisodeSpec]:
    return [
        EpisodeSpec(f"{task}#{r}", task, r, seed * 1_000_003 + i * per_task + r)
        for i, task in enumerate(task_ids)
        for r in range(per_task)
    ]


@dataclass
class _Live:
    spec: EpisodeSpec
    goal: str
    observation: str
    history: list[tuple[str, str]] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)


def run_episodes(
    path: Path,
    specs: list[EpisodeSpec],
    make_env: Callable[[], TextEnv],
    generator: Generator,
    sampling: Sampling,
    agent: AgentSettings,
    max_steps: int,
    label: str,
) -> list[dict]:
    """Play every spec not yet in `path`, appending each episode as it ends; returns all episodes."""
    done_ids = {ep["episode_id"] for ep in iter_jsonl(path)} if path.exists() else set()
    pending = deque(s for s in specs if s.episode_id not in done_ids)
    if pending:
        envs = [make_env() for _ in range(min(agent.parallel_episodes, len(pending)))]
        try:
            with JsonlAppender(path) as out, _progress() as bar:
                _play(pending, envs, generator, sampling, agent, max_steps, out, bar, label, len(specs), len(done_ids))
        finally:
            for env in envs:
                env.close()
    wanted = {s.episode_id for s in specs}
    return [ep for ep in iter_jsonl(path) if ep["episode_id"] in wanted]


def _play(pending, envs, generator, sampling, agent, max_steps, out, bar, label, total, already) -> None:
    task = bar.add_task(label, total=total, completed=already, rate="", success="")
    live: dict[int, _Live] = {}
    finished = won = steps_taken = 0
    started = time.monotonic()
    while pending or live:
        for slot, env in enumerate(envs):
            if slot not in live and pending:
                spec = pending.popleft()
                first = env.reset(spec.task_id, spec.seed)
                live[slot] = _Live(spec, env.goal, first)
        slots = sorted(live)
        prompts = [
            agent_messages(envs[s].role, live[s].goal, live[s].history, live[s].observation, envs[s].admissible_actions(), agent.history)
            for s in slots
        ]
        completions = generator.generate(prompts, 1, sampling)
        for slot, [completion] in zip(slots, completions):
            ep, env = live[slot], envs[slot]
            action = parse_action(completion, env.admissible_actions(), agent.action_parse)
            if action is None:
                step = Step(NO_ACTION_FEEDBACK, 0.0, False, False, False)
            else:
                step = env.step(action)
            ep.steps.append(
                {
                    "observation": ep.observation,
                    "completion": completion,
                    "action": action,
                    "next_observation": step.observation,
                    "valid": step.valid,
                    "reward": step.reward,
                    "won": step.won,
                }
            )
            ep.history.append((ep.observation, action or "(no action)"))
            if action is not None:  # the environment only moved when it was given an action
                ep.observation = step.observation
            steps_taken += 1
            if step.done or step.won or len(ep.steps) >= max_steps:
                out.append(_episode_record(ep, env.role, won=step.won))
                del live[slot]
                finished += 1
                won += step.won
        rate = steps_taken / max(time.monotonic() - started, 1e-9)
        bar.update(task, completed=already + finished, rate=f"{rate:.1f} steps/s", success=f"success {won}/{finished}" if finished else "")


def _episode_record(ep: _Live, role: str, won: bool) -> dict:
    return {
        "role": role,
        "episode_id": ep.spec.episode_id,
        "task_id": ep.spec.task_id,
        "rollout": ep.spec.rollout,
        "goal": ep.goal,
        "steps": ep.steps,
        "won": won,
        "num_steps": len(ep.steps),
        "num_invalid": sum(not s["valid"] for s in ep.steps),
    }


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("episodes"),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[success]}"),
        TimeElapsedColumn(),
    )
