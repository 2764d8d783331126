"""World-model data: triplets from the agent's own episodes, the episode split, the too-easy filter.

A triplet is (history, action a_t, real next observation s_t+1) for one valid step. The history
is the task, the last H valid (observation, action) pairs and the current observation; invalid
steps are dropped because the environment did not act on them. Episodes, not triplets, are
split 90/10 so that no episode feeds both training and validation.

The filter (PAPER.md step 3): a model fine-tuned on the validation triplets predicts each
training triplet K times; a triplet with at least one prediction within the strict threshold
is easy and kept with probability p, every other triplet is kept.
"""

from __future__ import annotations

import math
import random

from rwml_lite.distributed import dealt
from rwml_lite.models import Generator, Sampling
from rwml_lite.prompts import rwml_messages, wm_sft_target
from rwml_lite.reward import NextStateReward
from rwml_lite.schemas import EpisodeRecord, TripletRecord


def build_triplets(episodes: list[EpisodeRecord], history: int) -> tuple[list[TripletRecord], int]:
    """(triplets of every valid step, number of invalid steps dropped)."""
    triplets, dropped = [], 0
    for ep in episodes:
        past: list[tuple[str, str]] = []
        for t, step in enumerate(ep.steps):
            if not step.valid or step.action is None:
                dropped += 1
                continue
            window = past[-history:] if history else []
            real = step.world_target  # the environment's own target form (tau2)
            triplets.append(
                TripletRecord(
                    triplet_id=f"{ep.episode_id}/{t}",
                    episode_id=ep.episode_id,
                    goal=ep.world_goal,
                    history=window,
                    observation=step.observation,
                    action=step.action,
                    next_observation=real,
                    kind=step.kind,
                    measure=step.measure,
                    prompt=rwml_messages(ep.role, ep.world_goal, window, step.observation, step.action, history),
                    target=wm_sft_target(real),
                )
            )
            past.append((step.observation, step.action))
    return triplets, dropped


def split_by_episode(
    triplets: list[TripletRecord], val_fraction: float, seed: int
) -> tuple[list[TripletRecord], list[TripletRecord]]:
    """(train, val): a seeded share of episodes, at least one when there are two or more, goes to val."""
    episodes = sorted({t.episode_id for t in triplets})
    random.Random(seed).shuffle(episodes)
    n_val = min(max(1, math.ceil(val_fraction * len(episodes))), len(episodes) - 1) if len(episodes) > 1 else 0
    val_ids = set(episodes[:n_val])
    return [t for t in triplets if t.episode_id not in val_ids], [t for t in triplets if t.episode_id in val_ids]


def find_easy(
    triplets: list[TripletRecord], generator: Generator, sampling: Sampling, samples: int, strict: NextStateReward
) -> list[bool]:
    """True where at least one of `samples` predictions hits the real next observation at the strict
    threshold (each process of a multi-GPU run predicts and scores its share)."""

    def easy(share: list[TripletRecord]) -> list[bool]:
        predictions = generator.generate([t.prompt for t in share], samples, sampling)
        return [
            max(strict.score(preds, [t.next_observation] * len(preds), [t.measure] * len(preds))) >= 1.0
            for t, preds in zip(share, predictions)
        ]

    return dealt(easy, triplets)


def subsample_easy(triplets: list[TripletRecord], easy: list[bool], keep_p: float, seed: int) -> list[TripletRecord]:
    """Every hard triplet, and each easy one with probability `keep_p` (seeded)."""
    rng = random.Random(seed)
    return [t.model_copy(update={"easy": e}) for t, e in zip(triplets, easy) if not e or rng.random() < keep_p]
