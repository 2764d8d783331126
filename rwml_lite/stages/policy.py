"""policy: task-success RL, from the base or a trained adapter (`policy.start`), on training tasks played
anew at every step (train/policy.py)."""

from __future__ import annotations

from pathlib import Path

from rwml_lite.config import Recipe
from rwml_lite.runfolder import RunFolder

NAME = "policy"
KEYED_BY = ("model.lora", "model.optimizer", "policy")


def outputs(folder: RunFolder) -> list[Path]:
    return [folder.checkpoints(NAME), folder.policy_rollouts(), folder.metrics(NAME), folder.tensorboard(NAME)]


def run(recipe: Recipe, folder: RunFolder) -> dict:
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
