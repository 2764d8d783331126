"""build: the collected episodes become (state, action, next state) triplets, split into training and
held-out validation triplets by task (a game's triplets all land on one side)."""

from __future__ import annotations

from pathlib import Path

from rwml_lite.config import Recipe
from rwml_lite.distributed import is_main
from rwml_lite.errors import RwmlError
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import read_episodes, write_triplets

NAME = "build"
KEYED_BY = ("worldmodel.history", "worldmodel.val_fraction")
#: how this version computes it, where that changed in a way old artifacts do not show (part of its key):
#: build splits by task and writes each triplet's task since version 2
FORMAT = 2


def outputs(folder: RunFolder) -> list[Path]:
    return [folder.wm("train.jsonl"), folder.wm("val.jsonl")]


def run(recipe: Recipe, folder: RunFolder) -> dict:
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
