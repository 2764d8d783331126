"""The benchmarks: each module declares a `Benchmark` (envs/base.py) that makes its environment and holds
what the paper says of it; `benchmark(name)` finds it by the env section's name.

The table below names the module of each, imported when a recipe asks for it: a benchmark's engine comes
with its own extra (alfworld, tau2), and the core, which reaches benchmarks only through this function,
imports none of them (pyproject.toml's import contracts check it).
"""

from __future__ import annotations

import importlib

from rwml_lite.config import EnvSettings
from rwml_lite.envs.base import Benchmark, Step, TextEnv
from rwml_lite.models import Generator

#: env section `name` -> the module that declares its BENCHMARK
BENCHMARKS = {
    "textworld_express": "rwml_lite.envs.textworld_express",
    "alfworld": "rwml_lite.envs.alfworld",
    "tau2": "rwml_lite.envs.tau2",
}


def benchmark(name: str) -> Benchmark:
    return importlib.import_module(BENCHMARKS[name]).BENCHMARK


def make_env(settings: EnvSettings, max_steps: int, users: list[Generator] | None = None) -> TextEnv:
    """The recipe's environment; `users` are the models that play a simulated user, where the benchmark has one."""
    return benchmark(settings.name).make_env(settings, max_steps, users)


def list_tasks(settings: EnvSettings, split: str, count: int) -> list[str]:
    """The first `count` task ids of a split (the order is the environment's own, so it is stable)."""
    env = make_env(settings, max_steps=1)
    try:
        return env.tasks(split)[:count]
    finally:
        env.close()


__all__ = ["Benchmark", "Step", "TextEnv", "benchmark", "list_tasks", "make_env"]
