"""Evaluation of one policy variant (the base model, or the base with a trained adapter).

Two measures, as PAPER.md reports them: task success on the evaluation fold over R runs
(mean +- std, with the invalid-action rate and steps to success), and the world-model score,
the mean sim-to-real reward of the policy's predictions on the held-out validation triplets.
The episodes and predictions behind every number are kept in the run folder.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from rwml_lite.config import Recipe
from rwml_lite.distributed import dealt, is_main, seed_sampling
from rwml_lite.envs import list_tasks
from rwml_lite.models import Generator, Sampling, sampler, user_simulators
from rwml_lite.records import atomic_write_json, write_jsonl
from rwml_lite.reward import NextStateReward
from rwml_lite.rollout import episode_specs, run_episodes
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import EpisodeRecord, TripletRecord


def evaluate_variant(
    recipe: Recipe,
    folder: RunFolder,
    variant: str,
    adapter: Path | None,
    val_triplets: list[TripletRecord],
    reward: NextStateReward,
) -> dict:
    """Play each eval split's tasks R times and score the validation triplets; writes eval/<variant>.json."""
    e = recipe.eval
    generator = sampler(recipe.model, adapter)
    users = user_simulators(recipe)
    seed_sampling(recipe.seed)
    specs = [
        spec
        for split in e.splits
        for spec in episode_specs(list_tasks(recipe.env, split, e.num_tasks), split, e.runs, recipe.seed + 1)
    ]
    episodes = run_episodes(
        folder.eval(f"episodes_{variant}.jsonl"),
        specs,
        recipe.env,
        generator,
        Sampling(e.temperature, recipe.agent.max_new_tokens),
        recipe.agent,
        e.max_steps,
        f"eval {variant}",
        users,
    )
    sampling = Sampling(e.wm_temperature, recipe.grpo.max_completion_length, prefill=recipe.worldmodel.prefill)
    wm = world_model_score(generator, val_triplets, reward, e.wm_samples, sampling, folder.eval(f"wm_{variant}.jsonl"))
    result = {
        "variant": variant,
        "adapter": str(adapter) if adapter else None,
        **task_success(episodes, e.runs, e.splits),
        **wm,
    }
    if is_main():
        atomic_write_json(folder.eval(f"{variant}.json"), result)
    return result


def task_success(episodes: list[EpisodeRecord], runs: int, splits: list[str]) -> dict:
    """Success % per split and over all games ("all"), each as per-run rates (the episode's `rollout`
    index is its run) with mean +- std; success % per task type; invalid-action rate; steps to success."""
    types = sorted({ep.task_type for ep in episodes})
    steps = sum(ep.num_steps for ep in episodes)
    won_steps = [ep.num_steps for ep in episodes if ep.won]
    return {
        "success": {
            **{split: _over_runs([ep for ep in episodes if ep.split == split], runs) for split in splits},
            "all": _over_runs(episodes, runs),
        },
        "success_by_type": {t: _over_runs([ep for ep in episodes if ep.task_type == t], runs)["mean"] for t in types},
        "invalid_action_rate": 100.0 * sum(ep.num_invalid for ep in episodes) / max(steps, 1),
        "steps_to_success": statistics.fmean(won_steps) if won_steps else None,
        "episodes": len(episodes),
        "episodes_by_split": {split: sum(ep.split == split for ep in episodes) for split in splits},
        # tau2: tasks whose NL assertions no judge scored (their reward rests on the database)
        "nl_unscored": sorted({ep.task_id for ep in episodes if ep.final.get("nl_unscored")}),
    }


def _over_runs(episodes: list[EpisodeRecord], runs: int) -> dict:
    per_run = [[ep.won for ep in episodes if ep.rollout == r] for r in range(runs)]
    rates = [100.0 * sum(run) / len(run) for run in per_run if run]
    return {
        "per_run": rates,
        "mean": statistics.fmean(rates) if rates else 0.0,
        "std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
    }


def world_model_score(
    generator: Generator,
    triplets: list[TripletRecord],
    reward: NextStateReward,
    samples: int,
    sampling: Sampling,
    out: Path,
) -> dict:
    """Mean reward of `samples` predictions per triplet, the hit rate, and the tag rate, overall and
    per target kind. A hit is a full reward by the triplet's measure: within tau_d of the real state
    in the embedding, or rounded ROUGE-L 1.0 (tau2's tool replies)."""
    predictions = dealt(lambda share: generator.generate([t.prompt for t in share], samples, sampling), triplets)
    records, by_kind = [], {}
    for triplet, preds in zip(triplets, predictions):
        kind = triplet.kind
        reals = [triplet.next_observation] * len(preds)
        triplet_sims = reward.similarities(preds, reals)
        # the cosines already give embedded rewards; only ROUGE-measured targets are scored another way
        rouge = triplet.measure == "rouge"
        triplet_scores = (
            reward.score(preds, reals, ["rouge"] * len(preds)) if rouge else [reward.reward_of(s) for s in triplet_sims]
        )
        hits = [float(s == 1.0) for s in triplet_scores] if rouge else [reward.hit(s) for s in triplet_sims]
        tally = by_kind.setdefault(kind, {"scores": [], "hits": [], "tags": []})
        tally["scores"] += triplet_scores
        tally["hits"] += hits
        tally["tags"] += [s is not None for s in triplet_sims]
        records.append(
            {
                "triplet_id": triplet.triplet_id,
                "kind": kind,
                "real": triplet.next_observation,
                "predictions": preds,
                "similarities": triplet_sims,
                "rewards": triplet_scores,
                "hits": hits,
            }
        )
    if is_main():
        write_jsonl(out, records)

    def rates(tally: dict) -> dict:
        n = max(len(tally["scores"]), 1)
        return {
            "wm_score": sum(tally["scores"]) / n,
            "wm_hit_rate": 100.0 * sum(tally["hits"]) / n,
            "wm_tag_rate": 100.0 * sum(tally["tags"]) / n,
        }

    everything = {key: [v for t in by_kind.values() for v in t[key]] for key in ("scores", "hits", "tags")}
    return {
        **rates(everything),
        "wm_by_kind": {kind: rates(tally) for kind, tally in sorted(by_kind.items())},
        "wm_triplets": len(triplets),
        "wm_tau_d": reward.tau_d,
        "wm_reward_kind": reward.kind,
    }
