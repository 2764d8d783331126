"""Play episodes: many at once, one batched generate call per turn, each episode saved as it ends.

Used by collect (the policy plays the training tasks) and by eval (the base and trained policies
play the evaluation tasks). Up to `agent.parallel_episodes` episodes are live; every turn the
prompts of all live episodes go to the generator together (where batching pays on a GPU) and
their actions to an `EnvPool` together (where worker processes step the games side by side,
`env.workers`). An episode is
appended to its JSONL file the moment it ends, and episodes already in the file are skipped, so
a killed run resumes without losing or repeating an episode. Under `accelerate launch` each process
plays its share of the episodes into a shard file of its own, merged into the stage's file when all
are done (`distributed.py`).
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import Progress

from rwml_lite.config import AgentSettings, EnvSettings
from rwml_lite.distributed import barrier, deal, is_main, shard, shards, world
from rwml_lite.envs import Step
from rwml_lite.envs.pool import EnvPool, Start
from rwml_lite.models import Generator, Sampling
from rwml_lite.progress import console_progress
from rwml_lite.prompts import Messages, agent_messages, parse_action, whole_reply
from rwml_lite.records import JsonlAppender
from rwml_lite.schemas import EpisodeRecord, StepRecord, append_episode, read_episodes

#: Recorded as the outcome of a turn without an action (the environment is not stepped, and the
#: agent sees the same observation again, after a history entry "(no action)").
NO_ACTION_FEEDBACK = "Invalid response: give exactly one admissible action inside <action>...</action>."
#: The same where the environment reads the whole reply (tau2): a reply with nothing but reasoning.
EMPTY_REPLY = "(an empty reply: no message and no tool call)"


#: Step-info fields that describe one step, recorded in it, not in the episode's final outcome.
STEP_FIELDS = ("kind", "target", "measure")


@dataclass(frozen=True)
class EpisodeSpec:
    episode_id: str
    task_id: str
    split: str
    rollout: int
    seed: int


def episode_specs(task_ids: list[str], split: str, per_task: int, seed: int) -> list[EpisodeSpec]:
    return [
        EpisodeSpec(f"{task}#{r}", task, split, r, seed * 1_000_003 + i * per_task + r)
        for i, task in enumerate(task_ids)
        for r in range(per_task)
    ]


@dataclass
class _Live:
    spec: EpisodeSpec
    start: Start
    observation: str
    admissible: list[str] | None
    prompt: Messages | None  # the environment's own agent prompt (tau2), else None
    history: list[tuple[str, str]] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)


#: When a list, every agent round of every rollout appends (its start on time.monotonic(), the episodes it
#: samples for): `rwml-lite selftest` reads the seconds a round takes at full concurrency from it.
ROUNDS: list[tuple[float, int]] | None = None


@dataclass(frozen=True)
class Play:
    """How episodes are played, one value per caller (collect, eval, each policy step): in which environment, by
    which model at which sampling, under which agent settings, for at most `max_steps` agent turns, shown in the
    progress display as `label`; `users` play the simulated user where the benchmark has one."""

    env: EnvSettings
    generator: Generator
    sampling: Sampling
    agent: AgentSettings
    max_steps: int
    label: str
    users: list[Generator] | None = None


def run_episodes(
    path: Path,
    specs: list[EpisodeSpec],
    play: Play,
    *,
    keep_prompts: bool = False,
    pool: EnvPool | None = None,
    progress: Progress | None = None,
) -> list[EpisodeRecord]:
    """Play every spec not yet in `path`, appending each episode as it ends; returns all episodes.
    `keep_prompts` stores each turn's prompt messages and sampled ids in its step (what the policy stage trains
    on). A caller that plays many batches (the policy stage) passes its own `pool`, whose environments then live
    across calls, and its own `progress` display, in which this call shows a line while it runs."""
    merge_shards(path)  # those a killed run of several processes left
    done_ids = {ep.episode_id for ep in read_episodes(path)} if path.exists() else set()
    pending = deque(deal([s for s in specs if s.episode_id not in done_ids]))
    if pending:
        # one process: its bar counts every episode; several: each plays (and the main shows) its share. Done are the
        # specs not pending: the file may hold episodes of other specs too (a run folder filled by another recipe)
        total, already = (len(specs), len(specs) - len(pending)) if world() == 1 else (len(pending), 0)
        with contextlib.ExitStack() as stack:
            pool = pool or stack.enter_context(EnvPool(play.env, play.max_steps, users=play.users))
            bar = progress or stack.enter_context(progress_display())
            out = stack.enter_context(JsonlAppender(path if world() == 1 else shard(path)))
            task = bar.add_task(play.label, total=total, completed=already, info="")
            for finished, info in _play(play, pending, pool, out, keep_prompts):
                bar.update(task, completed=already + finished, info=info)
            if progress is not None:
                progress.remove_task(task)
    merge_shards(path)
    wanted = {s.episode_id for s in specs}
    return [ep for ep in read_episodes(path) if ep.episode_id in wanted]


def _play(play: Play, pending: deque, pool: EnvPool, out: JsonlAppender, keep_prompts: bool) -> Iterator[tuple]:
    """Keep up to agent.parallel_episodes episodes going, one generate call per round for all of them, until
    `pending` is played, appending each episode as it ends; yields (episodes finished, progress info) per round."""
    slots = min(play.agent.parallel_episodes, len(pending))
    live: dict[int, _Live] = {}
    finished = won = steps_taken = 0
    started = time.monotonic()
    while pending or live:
        ended, turns = _start(pending, pool, slots, live), 0
        _write(out, ended)  # those over at their start, before the round: a kill in it keeps them
        if live:
            over, turns = _round(play, live, pool, keep_prompts)
            _write(out, over)
            ended += over
        finished, won = finished + len(ended), won + sum(step.won for _, step in ended)
        steps_taken += turns
        if ended or turns:
            rate = steps_taken / max(time.monotonic() - started, 1e-9)
            yield finished, f"episodes {rate:.1f} steps/s" + (f" success {won}/{finished}" if finished else "")


def _write(out: JsonlAppender, ended: list[tuple[_Live, Step]]) -> None:
    """Append each ended episode to the run folder, as it ends."""
    for ep, step in ended:
        append_episode(out, _episode_record(ep, won=step.won, final=step.info))


def _start(pending: deque, pool: EnvPool, slots: int, live: dict[int, _Live]) -> list[tuple[_Live, Step]]:
    """Reset the free slots with the next pending episodes; returns those over before the agent acted (a simulated
    user who leaves at once) with how they ended."""
    starting = {slot: pending.popleft() for slot in range(slots) if slot not in live and pending}
    over = []
    for slot, start in pool.reset({slot: (spec.task_id, spec.seed) for slot, spec in starting.items()}).items():
        ep = _Live(starting[slot], start, start.observation, start.admissible, start.prompt)
        if start.ended is not None:
            over.append((ep, start.ended))
        else:
            live[slot] = ep
    return over


def _round(play: Play, live: dict[int, _Live], pool: EnvPool, keep_prompts: bool) -> tuple[list, int]:
    """One agent turn of every live episode: one generate call for all, one environment step each. Returns the
    episodes that ended (taken out of `live`) with their last step, and the turns sampled."""
    agent = play.agent
    prompts = {
        s: live[s].prompt
        or agent_messages(live[s].start.role, live[s].start.goal, live[s].history, live[s].observation,
                          live[s].admissible, agent.history, numbered=agent.action_parse == "choice")
        for s in sorted(live)
    }  # fmt: skip
    # a conversation that outgrew the model's context (an environment's whole-conversation prompt; vLLM has a
    # hard limit) is ended there rather than failing the run
    fits = getattr(play.generator, "fits", None)
    capped = {
        s: "context" for s in prompts if fits and live[s].prompt and not fits(prompts[s], play.sampling.max_new_tokens)
    }
    order = [s for s in prompts if s not in capped]
    if ROUNDS is not None:
        ROUNDS.append((time.monotonic(), len(order)))
    replies = play.generator.generate([prompts[s] for s in order], 1, play.sampling) if order else []
    completions = dict(zip(order, (c for [c] in replies)))
    actions = {
        s: whole_reply(completions[s])
        if live[s].prompt
        else parse_action(completions[s], live[s].admissible, agent.action_parse)
        for s in order
    }
    outcomes = pool.step({s: a for s, a in actions.items() if a is not None})
    ended = {}
    for slot in order:
        ep, action = live[slot], actions[slot]
        feedback = EMPTY_REPLY if ep.prompt else NO_ACTION_FEEDBACK
        step = (
            outcomes[slot].step
            if action is not None
            else Step(feedback, 0.0, False, False, False, {"kind": "no_action"})
        )
        ep.steps.append(_step_record(ep, completions[slot], action, step, prompts[slot] if keep_prompts else None))
        ep.history.append((ep.observation, action or "(no action)"))
        if action is not None:  # the environment only moved when it was given an action
            ep.observation, ep.admissible, ep.prompt = (
                step.observation,
                outcomes[slot].admissible,
                outcomes[slot].prompt,
            )
        if step.done or step.won:
            ended[slot] = step
        elif len(ep.steps) >= play.max_steps:
            capped[slot] = "turns"
    # episodes cut here: the environment ends them its own way (tau2: as its step limit, and scores them)
    for slot, final in pool.end(list(capped)).items():
        ended[slot] = Step("", 0.0, True, False, True, {**final, "cut": capped[slot]})
    return [(live.pop(slot), step) for slot, step in ended.items()], len(order)


def _step_record(ep: _Live, completion, action: str | None, step: Step, prompt: Messages | None) -> StepRecord:
    """One turn as the run folder keeps it; `prompt` (and the sampled ids) only where the caller keeps prompts."""
    return StepRecord(
        observation=ep.observation,
        completion=completion,
        action=action,
        next_observation=step.observation,
        valid=step.valid,
        kind=step.info.get("kind", "observation"),
        # how the world model's prediction of it is scored, and (tau2) what it predicts
        measure=step.info.get("measure", "embedding"),
        target=step.info.get("target"),
        reward=step.reward,
        won=step.won,
        truncated=getattr(completion, "truncated", False),
        prompt=prompt,
        completion_ids=getattr(completion, "token_ids", None) if prompt is not None else None,
    )


def merge_shards(path: Path) -> None:
    """Append to `path` the episodes of its per-process shard files that it lacks, then delete the
    shards (the main process; the others wait). A kill between the two leaves shards whose episodes
    `path` already holds: the next merge skips them."""
    barrier()
    parts = shards(path)
    if is_main() and parts:
        with JsonlAppender(path) as out:
            have = {ep.episode_id for ep in read_episodes(path)} if path.exists() else set()
            for part in parts:
                for ep in read_episodes(part):
                    if ep.episode_id not in have:
                        have.add(ep.episode_id)
                        append_episode(out, ep)
        for part in parts:
            part.unlink()
    barrier()


def _episode_record(ep: _Live, won: bool, final: dict) -> EpisodeRecord:
    """`final`: what the environment said at the end (tau2: the score's parts, how it ended)."""
    return EpisodeRecord(
        role=ep.start.role,
        episode_id=ep.spec.episode_id,
        task_id=ep.spec.task_id,
        split=ep.spec.split,
        task_type=ep.start.task_type,
        rollout=ep.spec.rollout,
        goal=ep.start.goal,
        world_goal=ep.start.world_goal,
        steps=ep.steps,
        won=won,
        final={k: v for k, v in final.items() if k not in STEP_FIELDS},
    )


def progress_display() -> Progress:
    """The console's progress lines (episodes of collect and eval, steps of the policy stage), shown by the main
    process alone: each task carries an `info` field with its running numbers."""
    return console_progress(disable=not is_main())
