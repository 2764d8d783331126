"""World-model data: triplets from the agent's own episodes, the episode split, the too-easy filter.

A triplet is (history, action a_t, real next observation s_t+1) for one valid step. The history
is the task, the last H valid (observation, action) pairs and the current observation; invalid
steps are dropped because the environment did not act on them. Tasks (games, tau2 tasks), not
triplets or episodes, are split 90/10: the held-out world-model score then measures prediction on
games the model never trained on, not the fit of games it has seen.

The filter (docs/paper.md step 3): a model fine-tuned on the validation triplets predicts each
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
                    task_id=ep.task_id,
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


def split_by_task(
    triplets: list[TripletRecord], val_fraction: float, seed: int
) -> tuple[list[TripletRecord], list[TripletRecord]]:
    """(train, val): the triplets of a seeded share of tasks, at least one task when there are two or more,
    go to val; no task has triplets on both sides."""
    tasks = sorted({t.task_id for t in triplets})
    random.Random(seed).shuffle(tasks)
    n_val = min(max(1, math.ceil(val_fraction * len(tasks))), len(tasks) - 1) if len(tasks) > 1 else 0
    val_ids = set(tasks[:n_val])
    return [t for t in triplets if t.task_id not in val_ids], [t for t in triplets if t.task_id in val_ids]


def distances(
    triplets: list[TripletRecord], predictions: list[list[str]], reward: NextStateReward
) -> list[list[float]]:
    """d = 1 - cos of each prediction to its triplet's real next observation, inf without a `<next_state>` tag;
    a triplet scored by ROUGE (tau2's tool replies) puts a prediction at 0 when its rounded ROUGE is full, else at
    inf (it hits at every threshold or at none)."""
    out = []
    for t, preds in zip(triplets, predictions):
        _, hits, sims = reward.scored(preds, [t.next_observation] * len(preds), [t.measure] * len(preds))
        if t.measure == "rouge":
            out.append([0.0 if hit else math.inf for hit in hits])
        else:
            out.append([math.inf if s is None else 1.0 - s for s in sims])
    return out


def predict(generator: Generator, triplets: list[TripletRecord], samples: int, sampling: Sampling) -> list[list[str]]:
    """`samples` predictions for each triplet's prompt (each process of a multi-GPU run makes its share)."""
    return dealt(lambda share: generator.generate([t.prompt for t in share], samples, sampling), triplets)


def closest_distances(
    triplets: list[TripletRecord], generator: Generator, sampling: Sampling, samples: int, reward: NextStateReward
) -> list[float]:
    """For each triplet, the distance of the closest of `samples` predictions: a triplet is easy at a threshold
    when it lies below it (at least one hit). Each process of a multi-GPU run predicts and scores its share."""

    def closest(share: list[TripletRecord]) -> list[float]:
        predictions = generator.generate([t.prompt for t in share], samples, sampling)
        return [min(d) for d in distances(share, predictions, reward)]

    return dealt(closest, triplets)


def subsample_easy(triplets: list[TripletRecord], easy: list[bool], keep_p: float, seed: int) -> list[TripletRecord]:
    """Every hard triplet, and each easy one with probability `keep_p` (seeded)."""
    rng = random.Random(seed)
    return [t.model_copy(update={"easy": e}) for t, e in zip(triplets, easy) if not e or rng.random() < keep_p]
