"""eval: every policy the recipe evaluates (the base model, or the base with a trained adapter), then the
report (stages/report.py).

Two measures, as docs/paper.md reports them: task success on the evaluation fold (per game over R runs,
with a 95 % interval over games; the invalid-action rate and steps to success), and the world model
on the held-out validation triplets, which come from games no training triplet comes from: the hit
rate at the run's tau_d with a 95 % interval over those games, the mean similarity, the tag rate.
`versus` compares two policies on the same games and triplets (paired). Mean +- std over runs is kept
too, for what it is: the spread of the agent's sampling on fixed games, not an uncertainty.
The episodes and predictions behind every number are kept in the run folder.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from rwml_lite.config import Recipe
from rwml_lite.distributed import is_main, seed_sampling
from rwml_lite.envs import list_tasks
from rwml_lite.intervals import Z95, clustered_mean, paired_difference, sign_test, wilson
from rwml_lite.models import Generator, Sampling, sampler, user_simulators
from rwml_lite.prompts import extract_next_state, wm_sft_messages
from rwml_lite.records import atomic_write_json, write_jsonl
from rwml_lite.rollout import Play, episode_specs, run_episodes
from rwml_lite.runfolder import RunFolder, read_manifest
from rwml_lite.schemas import EpisodeRecord, TripletRecord, read_triplets

if TYPE_CHECKING:  # torch, imported by the reward, comes after Unsloth: the stage imports it when it runs
    from rwml_lite.reward import NextStateReward

NAME = "eval"
KEYED_BY = ("eval", "reward")
#: the success column of every evaluated game pooled, beside one per split
POOLED = "all"


def outputs(folder: RunFolder) -> list[Path]:
    return [folder.root / "eval", folder.report, folder.root / "plots"]


def evaluated(recipe: Recipe, folder: RunFolder) -> dict[str, Path | None]:
    """policy name -> adapter (None for the base model): those of `recipe.evaluated_policies()`
    that exist, so that `rwml-lite eval` ahead of training evaluates the base model alone."""
    wanted = {name: None if name == "base" else folder.adapter(name) for name in recipe.evaluated_policies()}
    return {name: adapter for name, adapter in wanted.items() if adapter is None or adapter.exists()}


def run(recipe: Recipe, folder: RunFolder) -> dict:
    from rwml_lite.reward import NextStateReward
    from rwml_lite.stages.report import write_report
    from rwml_lite.thresholds import run_reward

    val = read_triplets(folder.wm("val.jsonl"))
    # scores whole turns (the generator returns the prefill); judge-trained policies are measured
    # like every other, by the embedding
    settings = run_reward(recipe, folder)
    reward = NextStateReward.from_settings(
        settings.model_copy(update={"kind": "binary"}) if settings.judged else settings, recipe.worldmodel
    )
    results = {
        name: evaluate_variant(recipe, folder, name, adapter, val, reward)
        for name, adapter in evaluated(recipe, folder).items()
    }
    if is_main():
        write_report(recipe, folder, read_manifest(folder), results)
    return {
        name: {
            "success": {split: round(v["mean"], 2) for split, v in r["success"].items()},
            "invalid_action_rate": r["invalid_action_rate"],
            "wm_score": r["wm_score"],
            "wm_hit_rate": r["wm_hit_rate"],
        }
        for name, r in results.items()
    }


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
    users = user_simulators(recipe, "eval")
    seed_sampling(recipe.seed)
    specs = [
        spec
        for split in e.splits
        for spec in episode_specs(list_tasks(recipe.env, split, e.num_tasks), split, e.runs, recipe.seed + 1)
    ]
    episodes = run_episodes(
        folder.eval(f"episodes_{variant}.jsonl"),
        specs,
        Play(
            recipe.env,
            generator,
            Sampling(e.temperature, recipe.agent.max_new_tokens),
            recipe.agent,
            e.max_steps,
            f"eval {variant}",
            users,
        ),
    )
    sampling = Sampling(e.wm_temperature, recipe.grpo.max_completion_length, prefill=recipe.worldmodel.prefill)
    if variant == "wm_sft":  # scored behind the prompt it was trained on, the paper's no-reasoning one
        val_triplets = [t.model_copy(update={"prompt": wm_sft_messages(t.prompt)}) for t in val_triplets]
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
    """Success % per split and over all games ("all"): the mean over games with a 95 % Wilson interval over
    games, and the per-run rates (the episode's `rollout` index is its run) with mean +- std; each game's wins
    by run; success % per task type; invalid-action rate; steps to success."""
    types = sorted({ep.task_type for ep in episodes})
    steps = sum(ep.num_steps for ep in episodes)
    won_steps = [ep.num_steps for ep in episodes if ep.won]
    return {
        "success": {
            **{split: success_rate([(1.0, [ep for ep in episodes if ep.split == split])], runs) for split in splits},
            POOLED: success_rate([(1.0, episodes)], runs),
        },
        "games": games(episodes),
        "success_by_type": {
            t: success_rate([(1.0, [ep for ep in episodes if ep.task_type == t])], runs)["mean"] for t in types
        },
        "invalid_action_rate": 100.0 * sum(ep.num_invalid for ep in episodes) / max(steps, 1),
        "steps_to_success": statistics.fmean(won_steps) if won_steps else None,
        "episodes": len(episodes),
        "episodes_by_split": {split: sum(ep.split == split for ep in episodes) for split in splits},
        # tau2: tasks whose NL assertions no judge scored (their reward rests on the database)
        "nl_unscored": sorted({ep.task_id for ep in episodes if ep.final.get("nl_unscored")}),
    }


def games(episodes: list[EpisodeRecord]) -> dict[str, list[bool]]:
    """ "split/task" -> whether each run of that game was won, in run order."""
    played: dict[str, dict[int, bool]] = {}
    for ep in episodes:
        played.setdefault(f"{ep.split}/{ep.task_id}", {})[ep.rollout] = ep.won
    return {game: [runs[r] for r in sorted(runs)] for game, runs in sorted(played.items())}


def success_rate(parts: list[tuple[float, list[EpisodeRecord]]], runs: int) -> dict:
    """Success % of a weighted sum of game sets (one set with weight 1: plain success; the paper's ALFWorld AVG
    is 2/3 ID + 1/3 OOD, its tau2 AVG 0.4 retail + 0.4 telecom + 0.2 airline): the mean over games, its 95 %
    interval over games (Wilson's for one set; for several, the normal approximation of the weighted sum of
    binomial proportions over games), and the per-run rates with their mean and std."""
    played = [(weight, episodes) for weight, episodes in parts if episodes]
    total = sum(weight for weight, _ in played)  # a set with no games leaves the others' weights renormalised
    rates, means, variance, count = [0.0] * runs, 0.0, 0.0, 0
    for weight, episodes in played:
        per_game = [statistics.fmean(won) for won in games(episodes).values()]
        mean, n, weight = statistics.fmean(per_game), len(per_game), weight / total
        means, variance, count = means + weight * mean, variance + weight**2 * mean * (1 - mean) / n, count + n
        for r in range(runs):
            in_run = [ep.won for ep in episodes if ep.rollout == r]
            rates[r] += weight * 100.0 * sum(in_run) / max(len(in_run), 1)
    if not count:
        low = high = None
    elif len(played) == 1:
        low, high = (100.0 * x for x in wilson(means * count, count))
    else:
        half = Z95 * math.sqrt(variance)
        low, high = 100.0 * max(0.0, means - half), 100.0 * min(1.0, means + half)
    return {
        "mean": 100.0 * means,
        "low": low,
        "high": high,
        "games": count,
        "per_run": rates,
        "run_mean": statistics.fmean(rates) if rates else 0.0,
        "run_std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
    }


def versus(result: dict, baseline: dict) -> dict:
    """`result`'s policy against `baseline`'s on the same games and held-out triplets (paired): the difference in
    success % with a 95 % interval over games and how many games each did better on, and the difference in
    world-model hit rate (points) with a 95 % interval over held-out tasks."""
    shared = sorted(set(result.get("games", {})) & set(baseline.get("games", {})))
    runs = {g: min(len(result["games"][g]), len(baseline["games"][g])) for g in shared}  # the runs both played
    ours = [[float(w) for w in result["games"][g][: runs[g]]] for g in shared]
    theirs = [[float(w) for w in baseline["games"][g][: runs[g]]] for g in shared]
    success = paired_difference(ours, theirs)
    by_game = sign_test([statistics.fmean(o) for o in ours], [statistics.fmean(t) for t in theirs])
    ours_hits, theirs_hits = _paired_hits(result.get("wm_hits_by_task", {}), baseline.get("wm_hits_by_task", {}))
    hits = paired_difference(ours_hits, theirs_hits)
    return {
        "success": _points(success.as_dict()) | {"games": by_game},
        "wm_hit_rate": _points(hits.as_dict()),
    }


def _paired_hits(ours: dict, theirs: dict) -> tuple[list[list[float]], list[list[float]]]:
    """Each held-out task's hits of the predictions both sides made for the same triplets, in the same order."""
    a, b = [], []
    for task in sorted(set(ours) & set(theirs)):
        pairs = [
            (x, y)
            for triplet in sorted(set(ours[task]) & set(theirs[task]))
            for x, y in zip(ours[task][triplet], theirs[task][triplet])
        ]
        a.append([float(x) for x, _ in pairs])
        b.append([float(y) for _, y in pairs])
    return a, b


def _points(estimate: dict) -> dict:
    """A rate's estimate in percentage points."""
    return {k: (100.0 * v if k in ("mean", "low", "high") and v is not None else v) for k, v in estimate.items()}


def world_model_score(
    generator: Generator,
    triplets: list[TripletRecord],
    reward: NextStateReward,
    samples: int,
    sampling: Sampling,
    out: Path,
) -> dict:
    """Mean reward of `samples` predictions per triplet, the hit rate (with its 95 % interval over the triplets'
    tasks), the mean similarity of the tagged predictions and the tag rate, overall and per target kind. A hit is
    a full reward by the triplet's measure: within tau_d of the real state in the embedding, or rounded ROUGE-L 1.0
    (tau2's tool replies)."""
    from rwml_lite.worldmodel import predict

    predictions = predict(generator, triplets, samples, sampling)
    records, by_kind, hits_by_task, similarities = [], {}, {}, []
    for triplet, preds in zip(triplets, predictions):
        kind = triplet.kind
        triplet_scores, triplet_hits, triplet_sims = reward.scored(
            preds, [triplet.next_observation] * len(preds), [triplet.measure] * len(preds)
        )
        hits = [float(h) for h in triplet_hits]
        tally = by_kind.setdefault(kind, {"scores": [], "hits": [], "tags": []})
        tally["scores"] += triplet_scores
        tally["hits"] += hits
        tally["tags"] += [extract_next_state(p) is not None for p in reward.read(preds)]
        hits_by_task.setdefault(triplet.task_id, {})[triplet.triplet_id] = hits
        similarities += [s for s in triplet_sims if s is not None]
        records.append(
            {
                "triplet_id": triplet.triplet_id,
                "task_id": triplet.task_id,
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
    clustered = clustered_mean([[float(h) for hits in task.values() for h in hits] for task in hits_by_task.values()])
    return {
        **rates(everything),
        "wm_hits": _points(clustered.as_dict()),
        "wm_similarity": statistics.fmean(similarities) if similarities else None,
        "wm_hits_by_task": hits_by_task,
        "wm_by_kind": {kind: rates(tally) for kind, tally in sorted(by_kind.items())},
        "wm_triplets": len(triplets),
        "wm_tau_d": reward.tau_d,
        "wm_reward_kind": reward.kind,
    }
