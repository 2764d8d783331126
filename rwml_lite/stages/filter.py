"""filter: the too-easy filter (a model trained by next-state SFT on the held-out triplets predicts the
training ones; those it already gets close to are mostly dropped), and the thresholds a recipe leaves to
`auto` (rwml_lite/thresholds.py)."""

from __future__ import annotations

from pathlib import Path

from rwml_lite.config import Recipe
from rwml_lite.distributed import is_main, say, seed_sampling
from rwml_lite.records import atomic_write_json
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import read_triplets, write_triplets

NAME = "filter"
KEYED_BY = (
    "model.lora",
    "model.optimizer",
    "worldmodel.prefill",
    "worldmodel.close_at_end",
    "worldmodel.filter",
    "reward.embedder",
    "reward.precision",
)
#: What the filter reads besides, when it measures a threshold (tau_d: auto): the reward's threshold (the
#: filter's is never looser), and to measure reward.tau_d, its band, ceiling and sample, sampled as GRPO samples.
MEASURING = ("reward.tau_d",)
MEASURING_REWARD = (
    "reward.auto_hit_rate", "reward.auto_max_tau_d", "reward.calibration_triplets",
    "grpo.group_size", "grpo.temperature", "grpo.max_completion_length",
)  # fmt: skip


def keyed_by(recipe: Recipe) -> tuple[str, ...]:
    """KEYED_BY, and what the filter reads to measure the thresholds a recipe leaves to auto."""
    if recipe.reward.tau_d == "auto":
        return KEYED_BY + MEASURING + MEASURING_REWARD
    if recipe.worldmodel.filter.tau_d == "auto":
        return KEYED_BY + MEASURING
    return KEYED_BY


def outputs(folder: RunFolder) -> list[Path]:
    return [
        folder.wm("rwml.jsonl"),
        folder.wm("filter.json"),
        folder.wm("thresholds.json"),
        folder.checkpoints(NAME),
        folder.metrics(NAME),
        folder.tensorboard(NAME),
    ]


def run(recipe: Recipe, folder: RunFolder) -> dict:
    """The too-easy filter, and the thresholds a recipe leaves to `auto` (rwml_lite/thresholds.py): the
    reward's first, from the starting policy's predictions, since the filter's is never looser."""
    from rwml_lite.models import Sampling, sampler
    from rwml_lite.prompts import wm_sft_messages
    from rwml_lite.reward import Embedder, NextStateReward
    from rwml_lite.thresholds import threshold_for_share
    from rwml_lite.train.common import free_memory
    from rwml_lite.train.sft import train_next_state_sft
    from rwml_lite.worldmodel import closest_distances, subsample_easy

    f, prefill = recipe.worldmodel.filter, recipe.worldmodel.prefill
    train, val = read_triplets(folder.wm("train.jsonl")), read_triplets(folder.wm("val.jsonl"))
    embedder = Embedder.from_settings(recipe.reward) if f.enabled or recipe.reward.tau_d == "auto" else None
    measured: dict = {}
    reward_tau_d = recipe.reward.tau_d
    if reward_tau_d == "auto":
        measured["reward"] = _calibrated_reward(recipe, train, embedder)
        reward_tau_d = measured["reward"]["tau_d"]
        say(f"  reward.tau_d: auto -> {_calibration_line(measured['reward'])}")
    filter_tau_d, easy = f.tau_d, [False] * len(train)
    if f.enabled:
        generator = sampler(recipe.model, train_next_state_sft(recipe, val, folder))
        seed_sampling(recipe.seed)
        asked = [t.model_copy(update={"prompt": wm_sft_messages(t.prompt)}) for t in train]  # as it was trained
        closest = closest_distances(
            asked, generator, Sampling(f.temperature, f.max_new_tokens, prefill=prefill), f.samples,
            NextStateReward(embedder, reward_tau_d, close_at_end=recipe.worldmodel.close_at_end),
        )  # fmt: skip
        del generator
        free_memory()
        if f.tau_d == "auto":
            filter_tau_d = threshold_for_share(closest, f.easy_target, ceiling=reward_tau_d)
            measured["filter"] = {"tau_d": filter_tau_d, "closest": _finite(closest)}
        easy = [d < filter_tau_d for d in closest]
    kept = subsample_easy(train, easy, f.keep_easy_p, recipe.seed)
    stats = {
        "train_triplets": len(train),
        "easy": sum(easy),
        "easy_fraction": sum(easy) / max(len(train), 1),
        "easy_target": f.easy_target,
        "kept": len(kept),
        "filter_enabled": f.enabled,
        "filter_tau_d": filter_tau_d,
        **({"reward_tau_d": reward_tau_d} if "reward" in measured else {}),  # a fixed one is the recipe's to read
    }
    if f.enabled and not 0.5 * f.easy_target <= stats["easy_fraction"] <= 1.5 * f.easy_target:
        stats["warning"] = (
            f"the filter found {100 * stats['easy_fraction']:.0f} % of the training triplets easy, the paper's recipe "
            f"aims at about {100 * f.easy_target:.0f} %: "
            + ("its threshold may not fit the embedder; set worldmodel.filter.tau_d=auto or measure one."
               if f.tau_d != "auto" else "the training threshold caps it, or the filter model predicts poorly.")
        )  # fmt: skip
        say(f"[yellow]  warning: {stats['warning']}[/yellow]")
    if is_main():
        write_triplets(folder.wm("rwml.jsonl"), kept)
        atomic_write_json(folder.wm("thresholds.json"), measured)
        atomic_write_json(folder.wm("filter.json"), stats)
    return stats


def _calibrated_reward(recipe: Recipe, train: list, embedder) -> dict:
    """reward.tau_d: auto, from a group of grpo.group_size predictions of the starting policy (the base model)
    for each of reward.calibration_triplets training triplets, sampled as GRPO samples them."""
    import random

    from rwml_lite.models import Sampling, sampler
    from rwml_lite.reward import NextStateReward
    from rwml_lite.thresholds import reward_threshold
    from rwml_lite.train.common import free_memory
    from rwml_lite.worldmodel import distances, predict

    r, g = recipe.reward, recipe.grpo
    embedded = [t for t in train if t.measure == "embedding"]  # ROUGE-scored ones (tau2's tools) know no tau_d
    sample = random.Random(recipe.seed).sample(embedded, min(r.calibration_triplets, len(embedded)))
    generator = sampler(recipe.model)
    sampling = Sampling(g.temperature, g.max_completion_length, prefill=recipe.worldmodel.prefill)
    seed_sampling(recipe.seed)
    predictions = predict(generator, sample, g.group_size, sampling)
    del generator
    free_memory()
    reward = NextStateReward(embedder, r.auto_max_tau_d, close_at_end=recipe.worldmodel.close_at_end)
    groups = distances(sample, predictions, reward)
    chosen = reward_threshold(groups, r.auto_hit_rate, r.auto_max_tau_d)
    tagged = sum(d != float("inf") for group in groups for d in group) / max(sum(map(len, groups)), 1)
    return {
        "tau_d": chosen.tau_d,
        "hit_rate": chosen.hit_rate,
        "signal_share": chosen.signal_share,
        "in_band": chosen.in_band,
        "band": list(r.auto_hit_rate),
        "tag_rate": tagged,
        "distances": [_finite(group) for group in groups],
    }


def _calibration_line(measured: dict) -> str:
    line = (
        f"{measured['tau_d']:.3f}: the starting policy hits {100 * measured['hit_rate']:.0f} % of its predictions "
        f"(band {100 * measured['band'][0]:.0f}-{100 * measured['band'][1]:.0f} %), {100 * measured['signal_share']:.0f} "
        f"% of its groups see both a hit and a miss"
    )
    if not measured["in_band"]:
        line += (
            f"; no threshold up to reward.auto_max_tau_d lands in the band (tags in {100 * measured['tag_rate']:.0f} % "
            "of the predictions): raise grpo.max_completion_length or set worldmodel.prefill"
        )
    return line


def _finite(values: list[float]) -> list[float | None]:
    """Distances as JSON holds them: inf (no prediction with a tag) as null."""
    return [None if v == float("inf") else round(v, 5) for v in values]
