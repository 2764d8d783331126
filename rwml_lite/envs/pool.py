"""A pool of environments stepped together, optionally spread over worker processes.

ALFWorld steps cost milliseconds to tens of milliseconds of Python each (TextWorld recomputes the
admissible commands) and loading a game ~0.65 s, so one process stepping 32 games in turn keeps
one core busy while the others idle. The pool gives each slot its own environment; with
`workers > 0` the slots are dealt to worker processes, every call sends each worker its share of
resets/steps at once and then gathers the answers, so the workers run side by side. With
`workers = 0` the same calls run in this process (cheap engines such as TextWorldExpress, tests).
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass

from rwml_lite.config import EnvSettings
from rwml_lite.envs import Step, TextEnv, benchmark, make_env
from rwml_lite.models import Generator
from rwml_lite.prompts import Messages


@dataclass
class Start:
    """What an agent needs after a reset."""

    observation: str
    goal: str
    admissible: list[str] | None
    task_type: str
    role: str
    world_goal: str
    #: The agent's prompt where the environment writes its own (tau2: upstream's); else None and the
    #: agent prompt of `prompts.agent_messages` is used.
    prompt: Messages | None = None
    #: The episode's end when it ended before the agent acted (a tau2 user who leaves at once).
    ended: Step | None = None


@dataclass
class Outcome:
    step: Step
    admissible: list[str] | None
    prompt: Messages | None = None


def _serve(envs: dict[int, TextEnv], settings: EnvSettings, max_steps: int, commands: list[tuple], users=None) -> list:
    """Run (slot, "reset", (task, seed)), (slot, "step", action) and (slot, "end", None) commands on this
    process's envs.
    Conversations with a simulated user (tau2) run side by side, so that one generate call answers
    every user turn of the round instead of one call per conversation."""
    for slot, _, _ in commands:
        if slot not in envs:
            envs[slot] = make_env(settings, max_steps, users)
    if commands and all(kind != "end" and hasattr(envs[slot], "conversation") for slot, kind, _ in commands):
        raw = benchmark(settings.name).run_conversations(
            [(envs[slot], envs[slot].conversation(kind, arg)) for slot, kind, arg in commands]
        )
    else:
        raw = [_run_one(envs[slot], kind, arg) for slot, kind, arg in commands]
    results = []
    for (slot, kind, arg), outcome in zip(commands, raw):
        env = envs[slot]
        if isinstance(outcome, Exception):  # carried back and raised in the main process
            results.append(outcome)
        elif kind == "reset":
            world_goal = getattr(env, "world_goal", env.goal)
            start = Start(outcome, env.goal, env.admissible_actions(), env.task_type(arg[0]), env.role, world_goal)
            start.prompt, start.ended = _prompt(env), getattr(env, "ended_at_reset", None)
            results.append(start)
        elif kind == "end":
            results.append(outcome)
        else:
            results.append(Outcome(outcome, env.admissible_actions(), None if outcome.done else _prompt(env)))
    return results


def _prompt(env: TextEnv) -> Messages | None:
    return env.agent_prompt() if hasattr(env, "agent_prompt") else None


def _run_one(env: TextEnv, kind: str, arg):
    try:
        if kind == "end":
            return env.end() if hasattr(env, "end") else {}
        return env.reset(*arg) if kind == "reset" else env.step(arg)
    except Exception as e:
        return e


def _worker(conn, settings: EnvSettings, max_steps: int) -> None:
    envs: dict[int, TextEnv] = {}
    try:
        while (commands := conn.recv()) is not None:
            conn.send(_serve(envs, settings, max_steps, commands))
    finally:
        for env in envs.values():
            env.close()


class EnvPool:
    def __init__(
        self, settings: EnvSettings, max_steps: int, workers: int | None = None, users: list[Generator] | None = None
    ):
        """`users`: the models that play the customer in tau2 conversations (in-process slots only)."""
        self.settings, self.max_steps, self.users = settings, max_steps, users
        self.workers = settings.workers if workers is None else workers
        self._local: dict[int, TextEnv] = {}
        self._conns, self._procs = [], []
        ctx = mp.get_context("spawn")  # workers must not inherit the trainer's threads and CUDA state
        for _ in range(self.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, settings, max_steps), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)

    def reset(self, tasks: dict[int, tuple[str, int]]) -> dict[int, Start]:
        """slot -> (task id, seed); returns slot -> first observation, goal, admissible actions."""
        return self._run([(slot, "reset", task) for slot, task in tasks.items()])

    def step(self, actions: dict[int, str]) -> dict[int, Outcome]:
        return self._run([(slot, "step", action) for slot, action in actions.items()])

    def end(self, slots: list[int]) -> dict[int, dict]:
        """Stop the episodes in `slots` from outside; slot -> the environment's final outcome ({} where it has none)."""
        return self._run([(slot, "end", None) for slot in slots]) if slots else {}

    def _run(self, commands: list[tuple]) -> dict:
        if not self.workers:
            results = dict(
                zip([c[0] for c in commands], _serve(self._local, self.settings, self.max_steps, commands, self.users))
            )
        else:
            shares: list[list[tuple]] = [[] for _ in self._conns]
            for command in commands:
                shares[command[0] % self.workers].append(command)
            for conn, share in zip(self._conns, shares):
                if share:
                    conn.send(share)
            results = {}
            for conn, share in zip(self._conns, shares):
                if share:
                    results.update(zip([c[0] for c in share], conn.recv()))
        for result in results.values():
            if isinstance(result, Exception):
                raise result
        return results

    def close(self) -> None:
        for env in self._local.values():
            env.close()
        for conn in self._conns:
            conn.send(None)
        for proc in self._procs:
            proc.join(timeout=10)

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
