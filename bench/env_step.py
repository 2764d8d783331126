"""Environment throughput: the EnvPool's worker processes against one process stepping games in turn.

B ALFWorld games are reset, then stepped `--steps` times each with a seeded random admissible
policy (the same actions in both modes, so both play the same games). Prints, for each B, the
steps per second of both modes, their ratio, the per-step latency and the reset time.

    ALFWORLD_DATA=... python bench/env_step.py [--batches 8 32] [--workers 4] [--steps 10]

Workers default to two per core: the pool steps in lockstep rounds, so one worker per core leaves a
core idle while the slower one finishes its share; two per core let the OS fill that gap
(measured on 2 cores: 1.6x with 2 workers, 1.8x with 4).
"""

from __future__ import annotations

import argparse
import os
import random
import time

from rwml_lite.config import ALFWorldSettings
from rwml_lite.envs.alfworld import games_root, list_games
from rwml_lite.envs.pool import EnvPool


def play(tasks: list[str], workers: int, steps: int, seed: int) -> tuple[float, float, int]:
    """(reset seconds, stepping seconds, steps taken) for one pool mode."""
    rng = random.Random(seed)
    with EnvPool(ALFWorldSettings(), max_steps=steps + 1, workers=workers) as pool:
        pool.reset({0: (tasks[0], 0)})  # start the workers before timing (spawn + imports)
        t0 = time.perf_counter()
        starts = pool.reset({slot: (task, 0) for slot, task in enumerate(tasks)})
        t1 = time.perf_counter()
        admissible = {slot: start.admissible for slot, start in starts.items()}
        taken = 0
        for _ in range(steps):
            actions = {slot: rng.choice(sorted(options)) for slot, options in admissible.items()}
            outcomes = pool.step(actions)
            taken += len(outcomes)
            admissible = {slot: o.admissible for slot, o in outcomes.items() if not o.step.done}
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--split", default="valid_seen")
    args = parser.parse_args()

    games = list_games(games_root(), args.split)
    print(
        f"ALFWorld {args.split}, random admissible policy, {args.steps} steps per game, {args.workers} workers, {os.cpu_count()} cores"
    )
    for batch in args.batches:
        tasks = games[:batch]
        reset_1, step_1, n_1 = play(tasks, 0, args.steps, seed=batch)
        reset_w, step_w, n_w = play(tasks, args.workers, args.steps, seed=batch)
        assert n_1 == n_w, "both modes must take the same steps"
        one, pool = n_1 / step_1, n_w / step_w
        print(
            f"B={batch:3d}: one process {one:6.1f} steps/s ({1000 / one:5.1f} ms/step), "
            f"pool {pool:6.1f} steps/s -> {pool / one:.2f}x; reset of all B games {reset_1:5.1f} s vs {reset_w:5.1f} s "
            f"({reset_1 / reset_w:.2f}x)"
        )


if __name__ == "__main__":
    main()
