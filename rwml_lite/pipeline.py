"""Running the stages (rwml_lite/stages/, one module each, in order): their keys, the manifest, resume,
`--redo` and a study's linking of finished stages; a recipe's `stages` picks which of them `train` runs.

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
from datetime import UTC, datetime
from pathlib import Path

import yaml

from rwml_lite.config import Recipe, get_dotted
from rwml_lite.distributed import barrier, is_main, say
from rwml_lite.errors import RwmlError
from rwml_lite.records import atomic_write_json, atomic_write_text
from rwml_lite.runfolder import RunFolder, read_manifest
from rwml_lite.stages import BY_NAME, STAGES
from rwml_lite.stages import eval as eval_stage

#: Fields that change how a stage runs (where, how fast, in how much memory) or which stages run,
#: never what a stage writes.
RESULT_NEUTRAL = (
    "run.dir", "run.report_to", "model.gpu_memory_utilization", "model.gradient_checkpointing",
    "model.offload_layers", "stages", "study.variants", "grpo.min_signal_share", "grpo.signal_window",
)  # fmt: skip


# ---------------------------------------------------------------- running and resuming


def depends_on(recipe: Recipe, stage: str) -> tuple[str, ...]:
    """The fields `stage`'s result depends on for this recipe: its KEYED_BY, or its keyed_by(recipe) where the
    recipe decides (the filter, which reads more to measure the thresholds a recipe leaves to auto)."""
    module = BY_NAME[stage]
    return module.keyed_by(recipe) if hasattr(module, "keyed_by") else module.KEYED_BY


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
        versioned = [stage_config(recipe, stage), previous]
        if hasattr(BY_NAME[stage], "FORMAT"):
            versioned.append(BY_NAME[stage].FORMAT)
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
    manifest = read_manifest(folder)
    keys = stage_keys(recipe)
    for stage in stages:
        _check_same_config(folder, manifest, stage, keys[stage], recipe)
    if is_main():
        atomic_write_text(folder.recipe, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    for stage in stages:
        entry = manifest["stages"].get(stage)
        if entry and entry["status"] == "done" and not _newly_trained(recipe, folder, stage, entry):
            say(f"[dim]= {stage}: already done, skipped ({_brief(entry['summary'])})[/dim]")
            continue
        say(f"[bold]> {stage}[/bold]" + (" (resuming)" if entry else ""))
        manifest["stages"][stage] = {
            "key": keys[stage],
            "config": stage_config(recipe, stage),
            "status": "running",
            "started": _now(),
        }
        if is_main():
            atomic_write_json(folder.manifest, manifest)
        started = time.monotonic()
        summary = BY_NAME[stage].run(recipe, folder)
        barrier()
        seconds = round(time.monotonic() - started, 1)
        manifest["stages"][stage].update(status="done", finished=_now(), seconds=seconds, summary=summary)
        if is_main():
            atomic_write_json(folder.manifest, manifest)
        say(f"[green]+ {stage}[/green] done in {seconds:.0f} s: {_brief(summary)}")
        left = [s for s in stages[stages.index(stage) + 1 :] if s in (forecast or {})]
        if left:
            minutes = sum(forecast[s] for s in left) / 60
            say(f"[dim]  about {minutes:,.0f} min to go for {', '.join(left)} (rwml-lite selftest's forecast)[/dim]")
    return folder


def link_finished(sources: list[RunFolder], target: RunFolder, recipe: Recipe) -> list[str]:
    """Link into `target` every finished stage of `sources` whose key equals the one `recipe` gives
    it, in order, up to the first stage none of them has (a study's variants share collect, build,
    filter and trained adapters this way). The artifacts become relative symlinks and the manifest
    entry is copied with where it came from; `run` then skips those stages as done. Returns the
    stages linked now."""
    keys = stage_keys(recipe)
    target.root.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(target)
    linked = []
    for stage in recipe.stages:
        entry = manifest["stages"].get(stage, {})
        if entry.get("linked_from") and not _links_hold(target, stage, entry["linked_from"], keys[stage]):
            del manifest["stages"][stage]  # its source was redone or moved: link again, or run it
            for path in BY_NAME[stage].outputs(target):
                if path.is_symlink():
                    path.unlink()
        elif stage == eval_stage.NAME or entry.get("status") == "done":
            continue
        found = [(f, e) for f in sources if (e := read_manifest(f)["stages"].get(stage)) and e["status"] == "done"]
        match = next(((f, e) for f, e in found if e["key"] == keys[stage]), None)
        if match is None:
            break
        source, entry = match
        links = {
            target.root / path.relative_to(source.root): path
            for path in BY_NAME[stage].outputs(source)
            if path.exists()
        }
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
    entry = read_manifest(RunFolder(Path(source)))["stages"].get(stage, {})
    links = [p for p in BY_NAME[stage].outputs(target) if p.is_symlink()]
    return entry.get("status") == "done" and entry.get("key") == key and all(p.exists() for p in links)


def _newly_trained(recipe: Recipe, folder: RunFolder, stage: str, entry: dict) -> bool:
    """An eval done before an adapter existed (`rwml-lite eval` ahead of training) is not done."""
    return stage == eval_stage.NAME and not set(eval_stage.evaluated(recipe, folder)) <= set(entry["summary"])


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
    for name in later:
        for path in BY_NAME[name].outputs(folder):
            if path.exists():
                dest = target / path.relative_to(folder.root)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), dest)
    manifest = read_manifest(folder)
    for name in later:
        manifest["stages"].pop(name, None)
    atomic_write_json(folder.manifest, manifest)
    say(f"moved the artifacts of {', '.join(later)} to {target}")


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
