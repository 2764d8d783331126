"""Stage order, the manifest, and resume: collect -> build -> filter -> rwml -> wm_sft -> policy -> eval
(+ report); a recipe's `stages` picks which of them `train` runs.

Each stage reads what the stage before wrote in the run folder and writes its own artifacts.
Its *key* hashes the recipe sections it depends on plus the key of the stage before, so a
stage is skipped when it finished with the same key, resumed when it started with the same
key (collect and eval continue their episode files, rwml its last checkpoint), and refused
when the recipe changed under it: the error names the changed fields. `redo` moves a stage's
artifacts and those of every later stage into `superseded/<time>/` instead of deleting them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml
from rich.console import Console

from rwml_lite.config import Recipe, get_dotted
from rwml_lite.distributed import barrier, is_main, seed_sampling, shards
from rwml_lite.errors import RwmlError
from rwml_lite.records import SCHEMA, atomic_write_json, atomic_write_text, read_jsonl
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import read_episodes, read_triplets, write_triplets

console = Console(stderr=True)

#: stage -> the recipe fields (or whole sections) its result depends on, besides the stages before
#: it: what it reads that can change what it writes. The model fields that pick the sampling path
#: and its numerics key collect (and through it every later stage); the LoRA and optimizer key the
#: two trainers.
DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "collect": (
        "seed",
        "model.name_or_path",
        "model.backend",
        "model.load_in_4bit",
        "model.fast_inference",
        "model.dtype",
        "model.max_seq_length",
        "model.generation_batch_size",
        "model.chat_template",
        "model.server",
        "env",
        "agent",
        "collect",
    ),
    "build": ("worldmodel.history", "worldmodel.val_fraction"),
    "filter": (
        "model.lora",
        "model.optimizer",
        "worldmodel.prefill",
        "worldmodel.close_at_end",
        "worldmodel.filter",
        "reward.embedder",
        "reward.precision",
    ),
    "rwml": ("model.lora", "model.optimizer", "reward", "grpo"),
    "wm_sft": ("model.lora", "model.optimizer", "wm_sft"),
    "policy": ("model.lora", "model.optimizer", "policy"),
    "eval": ("eval", "reward"),
}
#: What the filter stage reads besides, when it measures a threshold (tau_d: auto): the reward's threshold (the
#: filter's is never looser), and to measure reward.tau_d, its band, ceiling and sample, sampled as GRPO samples.
MEASURING = ("reward.tau_d",)
MEASURING_REWARD = (
    "reward.auto_hit_rate", "reward.auto_max_tau_d", "reward.calibration_triplets",
    "grpo.group_size", "grpo.temperature", "grpo.max_completion_length",
)  # fmt: skip
#: Fields that change how a stage runs (where, how fast, in how much memory) or which stages run,
#: never what a stage writes.
RESULT_NEUTRAL = (
    "run.dir", "run.report_to", "model.gpu_memory_utilization", "model.gradient_checkpointing",
    "model.offload_layers", "stages", "study.variants", "grpo.min_signal_share", "grpo.signal_window",
)  # fmt: skip
STAGES = list(DEPENDS_ON)
#: stage -> how this version of rwml-lite computes it, where that changed in a way old artifacts do not show (part
#: of its key): build splits by task and writes each triplet's task since version 2.
FORMATS = {"build": 2}


def _outputs(folder: RunFolder) -> dict[str, list[Path]]:
    return {
        "collect": [folder.rollouts, *shards(folder.rollouts)],
        "build": [folder.wm("train.jsonl"), folder.wm("val.jsonl")],
        "filter": [
            folder.wm("rwml.jsonl"),
            folder.wm("filter.json"),
            folder.wm("thresholds.json"),
            folder.checkpoints("filter"),
            folder.metrics("filter"),
            folder.tensorboard("filter"),
        ],
        "rwml": [folder.checkpoints("rwml"), folder.metrics("rwml"), folder.tensorboard("rwml")],
        "wm_sft": [folder.checkpoints("wm_sft"), folder.metrics("wm_sft"), folder.tensorboard("wm_sft")],
        "policy": [
            folder.checkpoints("policy"),
            folder.policy_rollouts(),
            folder.metrics("policy"),
            folder.tensorboard("policy"),
        ],
        "eval": [folder.root / "eval", folder.report, folder.root / "plots"],
    }


# ---------------------------------------------------------------- the stages


def collect(recipe: Recipe, folder: RunFolder) -> dict:
    from rwml_lite.envs import list_tasks
    from rwml_lite.models import Sampling, sampler, user_simulators
    from rwml_lite.rollout import episode_specs, run_episodes

    c = recipe.collect
    generator = sampler(recipe.model)
    users = user_simulators(recipe, "collect")
    seed_sampling(recipe.seed)
    episodes = run_episodes(
        folder.rollouts,
        episode_specs(list_tasks(recipe.env, c.split, c.num_tasks), c.split, c.rollouts_per_task, recipe.seed),
        recipe.env,
        generator,
        Sampling(c.temperature, recipe.agent.max_new_tokens),
        recipe.agent,
        c.max_steps,
        "collect",
        users,
    )
    steps = sum(ep.num_steps for ep in episodes)
    invalid = sum(ep.num_invalid for ep in episodes)
    return {
        "episodes": len(episodes),
        "steps": steps,
        "invalid_steps": invalid,
        "success_rate": 100.0 * sum(ep.won for ep in episodes) / len(episodes),
    }


def build(recipe: Recipe, folder: RunFolder) -> dict:
    """Every process computes the same triplets (cheap, deterministic); the main one writes them."""
    from rwml_lite.worldmodel import build_triplets, split_by_task

    episodes = read_episodes(folder.rollouts)
    triplets, dropped = build_triplets(episodes, recipe.worldmodel.history)
    with_triplets = len({t.task_id for t in triplets})
    if with_triplets < 2:
        raise RwmlError(
            f"{folder.rollouts} holds {len(episodes)} episodes of {len({ep.task_id for ep in episodes})} tasks but only "
            f"{with_triplets} of the tasks have a valid step ({dropped} invalid steps dropped); the train/validation "
            f"split holds tasks apart and needs at least 2. The model rarely "
            f"answered with an admissible <action>: play more (collect.num_tasks, collect.rollouts_per_task), lower "
            f"collect.temperature, use a stronger model, or set agent.action_parse=mention for a tiny one."
        )
    train, val = split_by_task(triplets, recipe.worldmodel.val_fraction, recipe.seed)
    if is_main():
        write_triplets(folder.wm("train.jsonl"), train)
        write_triplets(folder.wm("val.jsonl"), val)
    return {
        "triplets": len(triplets),
        "invalid_dropped": dropped,
        "train_triplets": len(train),
        "val_triplets": len(val),
        "val_tasks": len({t.task_id for t in val}),
    }


def filter_easy(recipe: Recipe, folder: RunFolder) -> dict:
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
        _say(f"  reward.tau_d: auto -> {_calibration_line(measured['reward'])}")
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
        _say(f"[yellow]  warning: {stats['warning']}[/yellow]")
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


def rwml(recipe: Recipe, folder: RunFolder) -> dict:
    from rwml_lite.reward import NextStateReward
    from rwml_lite.thresholds import run_reward
    from rwml_lite.train.grpo import signal_summary, train_rwml

    kept = read_triplets(folder.wm("rwml.jsonl"))
    if not kept:
        raise RwmlError(
            f"{folder.wm('rwml.jsonl')} is empty: the filter kept no triplet. Raise worldmodel.filter.keep_easy_p or collect more."
        )
    if recipe.reward.judged:
        from rwml_lite.judge_reward import JudgeReward

        reward = JudgeReward(recipe.reward, recipe.worldmodel.prefill, recipe.worldmodel.close_at_end)
    else:
        reward = NextStateReward.from_settings(run_reward(recipe, folder), recipe.worldmodel)
    adapter = train_rwml(recipe, kept, reward, folder)
    return {"adapter": str(adapter), **signal_summary(read_jsonl(folder.metrics("rwml")))}


def wm_sft(recipe: Recipe, folder: RunFolder) -> dict:
    from rwml_lite.train.sft import train_wm_sft

    kept = read_triplets(folder.wm("rwml.jsonl"))
    adapter = train_wm_sft(recipe, kept, folder)
    logs = [m for m in read_jsonl(folder.metrics("wm_sft")) if "loss" in m]
    return {"adapter": str(adapter), "triplets": len(kept), "final_loss": logs[-1]["loss"] if logs else None}


def policy(recipe: Recipe, folder: RunFolder) -> dict:
    from rwml_lite.train.policy import read_policy_metrics, train_policy

    adapter = train_policy(recipe, folder)
    logs = read_policy_metrics(folder.metrics("policy"))
    last = logs[-10:]
    return {
        "adapter": str(adapter),
        "start": recipe.policy.start,
        "steps": logs[-1]["step"] if logs else 0,
        "success_first_10_steps": sum(m["success"] for m in logs[:10]) / max(len(logs[:10]), 1),
        "success_last_10_steps": sum(m["success"] for m in last) / max(len(last), 1),
    }


def evaluated(recipe: Recipe, folder: RunFolder) -> dict[str, Path | None]:
    """policy name -> adapter (None for the base model): those of `recipe.evaluated_policies()`
    that exist, so that `rwml-lite eval` ahead of training evaluates the base model alone."""
    wanted = {name: None if name == "base" else folder.adapter(name) for name in recipe.evaluated_policies()}
    return {name: adapter for name, adapter in wanted.items() if adapter is None or adapter.exists()}


def evaluate(recipe: Recipe, folder: RunFolder) -> dict:
    from rwml_lite.evaluate import evaluate_variant
    from rwml_lite.report import write_report
    from rwml_lite.reward import NextStateReward
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
        write_report(recipe, folder, _read_manifest(folder), results)
    return {
        name: {
            "success": {split: round(v["mean"], 2) for split, v in r["success"].items()},
            "invalid_action_rate": r["invalid_action_rate"],
            "wm_score": r["wm_score"],
            "wm_hit_rate": r["wm_hit_rate"],
        }
        for name, r in results.items()
    }


RUNNERS: dict[str, Callable[[Recipe, RunFolder], dict]] = {
    "collect": collect,
    "build": build,
    "filter": filter_easy,
    "rwml": rwml,
    "wm_sft": wm_sft,
    "policy": policy,
    "eval": evaluate,
}


# ---------------------------------------------------------------- running and resuming


def depends_on(recipe: Recipe, stage: str) -> tuple[str, ...]:
    """The fields `stage`'s result depends on for this recipe: DEPENDS_ON, and for the filter what it reads to
    measure the thresholds a recipe leaves to auto."""
    fields = DEPENDS_ON[stage]
    if stage == "filter" and recipe.reward.tau_d == "auto":
        return fields + MEASURING + MEASURING_REWARD
    if stage == "filter" and recipe.worldmodel.filter.tau_d == "auto":
        return fields + MEASURING
    return fields


def stage_config(recipe: Recipe, stage: str) -> dict:
    """The values of the fields `stage` depends on, without the result-neutral ones inside its sections."""
    data = recipe.model_dump(mode="json")
    for field in RESULT_NEUTRAL:
        section, _, key = field.rpartition(".")
        if section:
            get_dotted(data, section).pop(key, None)
    return {path: get_dotted(data, path) for path in depends_on(recipe, stage)}


def stage_keys(recipe: Recipe) -> dict[str, str]:
    """stage -> hash of its own recipe sections and the key of the stage before it."""
    keys, previous = {}, ""
    for stage in STAGES:
        versioned = [stage_config(recipe, stage), previous] + ([FORMATS[stage]] if stage in FORMATS else [])
        previous = keys[stage] = hashlib.sha256(json.dumps(versioned, sort_keys=True).encode()).hexdigest()[:16]
    return keys


def run(
    recipe: Recipe, stages: list[str], redo: str | None = None, forecast: dict[str, float] | None = None
) -> RunFolder:
    """Run the given stages in order, skipping finished ones and resuming started ones. Under
    `accelerate launch` every process runs each stage (each doing its share) and the main process
    alone writes the manifest; all of them finish a stage before any starts the next. `forecast` (stage ->
    seconds, `rwml-lite selftest`'s) has each finished stage say how long the ones still to run should take."""
    from rwml_lite.sources import checkpoint_folder

    folder = RunFolder(Path(recipe.run.dir))
    if is_main():
        checkpoint_folder(recipe.model.name_or_path)  # a GGUF model is converted once, before the others read it
        folder.root.mkdir(parents=True, exist_ok=True)
        if redo:
            supersede(folder, redo)
    barrier()
    manifest = _read_manifest(folder)
    keys = stage_keys(recipe)
    for stage in stages:
        _check_same_config(folder, manifest, stage, keys[stage], recipe)
    if is_main():
        atomic_write_text(folder.recipe, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    for stage in stages:
        entry = manifest["stages"].get(stage)
        if entry and entry["status"] == "done" and not _newly_trained(recipe, folder, stage, entry):
            _say(f"[dim]= {stage}: already done, skipped ({_brief(entry['summary'])})[/dim]")
            continue
        _say(f"[bold]> {stage}[/bold]" + (" (resuming)" if entry else ""))
        manifest["stages"][stage] = {
            "key": keys[stage],
            "config": stage_config(recipe, stage),
            "status": "running",
            "started": _now(),
        }
        if is_main():
            atomic_write_json(folder.manifest, manifest)
        started = time.monotonic()
        summary = RUNNERS[stage](recipe, folder)
        barrier()
        seconds = round(time.monotonic() - started, 1)
        manifest["stages"][stage].update(status="done", finished=_now(), seconds=seconds, summary=summary)
        if is_main():
            atomic_write_json(folder.manifest, manifest)
        _say(f"[green]+ {stage}[/green] done in {seconds:.0f} s: {_brief(summary)}")
        left = [s for s in stages[stages.index(stage) + 1 :] if s in (forecast or {})]
        if left:
            minutes = sum(forecast[s] for s in left) / 60
            _say(f"[dim]  about {minutes:,.0f} min to go for {', '.join(left)} (rwml-lite selftest's forecast)[/dim]")
    return folder


def _say(line: str) -> None:
    """A progress line on the console, once (by the main process) however many processes run."""
    if is_main():
        console.print(line)


def link_finished(sources: list[RunFolder], target: RunFolder, recipe: Recipe) -> list[str]:
    """Link into `target` every finished stage of `sources` whose key equals the one `recipe` gives
    it, in order, up to the first stage none of them has (a study's variants share collect, build,
    filter and trained adapters this way). The artifacts become relative symlinks and the manifest
    entry is copied with where it came from; `run` then skips those stages as done. Returns the
    stages linked now."""
    keys = stage_keys(recipe)
    target.root.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(target)
    linked = []
    for stage in recipe.stages:
        entry = manifest["stages"].get(stage, {})
        if entry.get("linked_from") and not _links_hold(target, stage, entry["linked_from"], keys[stage]):
            del manifest["stages"][stage]  # its source was redone or moved: link again, or run it
            for path in _outputs(target)[stage]:
                if path.is_symlink():
                    path.unlink()
        elif stage == "eval" or entry.get("status") == "done":
            continue
        found = [(f, e) for f in sources if (e := _read_manifest(f)["stages"].get(stage)) and e["status"] == "done"]
        match = next(((f, e) for f, e in found if e["key"] == keys[stage]), None)
        if match is None:
            break
        source, entry = match
        links = {target.root / path.relative_to(source.root): path for path in _outputs(source)[stage] if path.exists()}
        if any(link.exists() and not link.is_symlink() for link in links):
            break  # the target began this stage itself: its own artifacts are not replaced
        for link, path in links.items():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)  # a link left by a linking that was killed half-way
            link.symlink_to(os.path.relpath(path, link.parent))
        manifest["stages"][stage] = {**entry, "linked_from": str(source.root)}
        linked.append(stage)
    atomic_write_json(target.manifest, manifest)
    return linked


def _links_hold(target: RunFolder, stage: str, source: str, key: str) -> bool:
    """Whether a linked stage still stands for its source: links that resolve, and the source's
    manifest still holding that stage done with the same key."""
    entry = _read_manifest(RunFolder(Path(source)))["stages"].get(stage, {})
    links = [p for p in _outputs(target)[stage] if p.is_symlink()]
    return entry.get("status") == "done" and entry.get("key") == key and all(p.exists() for p in links)


def _newly_trained(recipe: Recipe, folder: RunFolder, stage: str, entry: dict) -> bool:
    """An eval done before an adapter existed (`rwml-lite eval` ahead of training) is not done."""
    return stage == "eval" and not set(evaluated(recipe, folder)) <= set(entry["summary"])


def _read_manifest(folder: RunFolder) -> dict:
    if not folder.manifest.exists():
        return {"schema": SCHEMA, "stages": {}}
    return json.loads(folder.manifest.read_text())


def _check_same_config(folder: RunFolder, manifest: dict, stage: str, key: str, recipe: Recipe) -> None:
    entry = manifest["stages"].get(stage)
    if entry is None or entry["key"] == key:
        return
    now, before = _flatten(stage_config(recipe, stage)), _flatten(entry["config"])
    changed = [f"{k}: {before.get(k)} -> {now.get(k)}" for k in {**before, **now} if now.get(k) != before.get(k)]
    what = (
        "; ".join(sorted(changed))
        if changed
        else (
            "a stage before it changed, or this version of rwml-lite computes it differently from the one that ran it"
        )
    )
    raise RwmlError(
        f"Run folder {folder.root} holds a `{stage}` stage ({entry['status']}) made with a different recipe ({what}). "
        f"Either keep that run and choose a new folder (run.dir=runs/NEW), or pass --redo {stage} to move its "
        f"artifacts and those of later stages into {folder.root / 'superseded'} and run them again."
    )


def supersede(folder: RunFolder, stage: str) -> None:
    """`--redo STAGE`: move the artifacts of `stage` and every later stage to superseded/ (kept, never
    deleted) and forget them in the manifest, so that the next run makes them again."""
    if stage not in STAGES:
        raise RwmlError(f"--redo {stage!r}: no such stage; stages are {', '.join(STAGES)}.")
    later = STAGES[STAGES.index(stage) :]
    if not folder.manifest.exists():  # nothing made yet (a study's variant before its first run)
        return
    target = folder.root / "superseded" / datetime.now().strftime("%Y%m%d-%H%M%S")
    outputs = _outputs(folder)
    for name in later:
        for path in outputs[name]:
            if path.exists():
                dest = target / path.relative_to(folder.root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), dest)
    manifest = _read_manifest(folder)
    for name in later:
        manifest["stages"].pop(name, None)
    atomic_write_json(folder.manifest, manifest)
    console.print(f"moved the artifacts of {', '.join(later)} to {target}")


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in data.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _brief(summary: dict) -> str:
    """A stage's summary on one line; its warning, printed when it was given, is left out."""
    items = {k: v for k, v in _flatten(summary).items() if k != "warning"}
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
