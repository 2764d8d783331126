"""wm_sft: the paper's baseline, supervised next-state prediction on the same kept triplets (train/sft.py)."""

from __future__ import annotations

from pathlib import Path

from rwml_lite.config import Recipe
from rwml_lite.records import read_jsonl
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import read_triplets

NAME = "wm_sft"
KEYED_BY = ("model.lora", "model.optimizer", "wm_sft")


def outputs(folder: RunFolder) -> list[Path]:
    return [folder.checkpoints(NAME), folder.metrics(NAME), folder.tensorboard(NAME)]


def run(recipe: Recipe, folder: RunFolder) -> dict:
    from rwml_lite.train.sft import train_wm_sft

    kept = read_triplets(folder.wm("rwml.jsonl"))
    adapter = train_wm_sft(recipe, kept, folder)
    logs = [m for m in read_jsonl(folder.metrics("wm_sft")) if "loss" in m]
    return {"adapter": str(adapter), "triplets": len(kept), "final_loss": logs[-1]["loss"] if logs else None}
