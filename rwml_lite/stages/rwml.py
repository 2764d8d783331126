"""rwml: GRPO on the kept triplets, rewarded by how close the policy's predicted next state lands to the
real one (rwml_lite/reward/; or a judge, rwml_lite/reward/judge.py), from TRL's trainer (train/grpo.py)."""

from __future__ import annotations

from pathlib import Path

from rwml_lite.config import Recipe
from rwml_lite.errors import RwmlError
from rwml_lite.records import read_jsonl
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import read_triplets

NAME = "rwml"
KEYED_BY = ("model.lora", "model.optimizer", "reward", "grpo")


def outputs(folder: RunFolder) -> list[Path]:
    return [folder.checkpoints(NAME), folder.metrics(NAME), folder.tensorboard(NAME)]


def run(recipe: Recipe, folder: RunFolder) -> dict:
    from rwml_lite.reward import NextStateReward
    from rwml_lite.thresholds import run_reward
    from rwml_lite.train.grpo import signal_summary, train_rwml

    kept = read_triplets(folder.wm("rwml.jsonl"))
    if not kept:
        raise RwmlError(
            f"{folder.wm('rwml.jsonl')} is empty: the filter kept no triplet. Raise worldmodel.filter.keep_easy_p or collect more."
        )
    if recipe.reward.judged:
        from rwml_lite.reward.judge import JudgeReward

        reward = JudgeReward(recipe.reward, recipe.worldmodel.prefill, recipe.worldmodel.close_at_end)
    else:
        reward = NextStateReward.from_settings(run_reward(recipe, folder), recipe.worldmodel)
    adapter = train_rwml(recipe, kept, reward, folder)
    return {"adapter": str(adapter), **signal_summary(read_jsonl(folder.metrics("rwml")))}
