"""One policy-stage update (`train/policy._update`) of the tiny Qwen3 on fixed episodes, in as many
processes as `accelerate launch` started (or one, run plainly), in the recipe's mini batches, with its KL
term to the base model; the main process saves what the update did: each LoRA weight's change and the
step's metrics. test_distributed.py runs it both ways.

Plain SGD, so that a weight's change is the (clipped) gradient itself: Adam's first step moves
each weight by about the learning rate whatever the gradient's scale, and would hide a gradient
that was not summed over the processes.

usage: policy_update_script.py MODEL_DIR RECIPE OUT.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import GOAL, episode_record  # noqa: E402
from rwml_lite.config import load_recipe  # noqa: E402
from rwml_lite.distributed import is_main, local_device  # noqa: E402
from rwml_lite.models.hf import policy_model  # noqa: E402
from rwml_lite.prompts import agent_messages  # noqa: E402
from rwml_lite.train.policy import Reference, _update  # noqa: E402

ROLE = "You are an expert agent playing a text-based household game."
ROOMS = ["kitchen", "bathroom", "bedroom"]
REPLIES = ["<action>inventory</action>", "<action>look around</action>", "I think <action>take shirt</action>"]


def episodes():
    """Three tasks, two episodes each, one won and one lost, of two turns with different replies."""
    made = []
    for t, room in enumerate(ROOMS):
        for g in range(2):
            steps = [
                {
                    "prompt": agent_messages(ROLE, GOAL, [], f"You are in the {room}. Turn {k}.", ["look around"], 1),
                    "completion": REPLIES[(t + g + k) % 3],
                    "truncated": False,
                    "valid": True,
                }
                for k in range(2)
            ]
            made.append(episode_record(f"train-{t}#{g}", steps, won=g == 0, rollout=g))
    return made


def main(model_dir: str, recipe_path: str, out: str) -> None:
    recipe = load_recipe(recipe_path, [f"model.name_or_path={model_dir}"])
    model, tokenizer = policy_model(recipe.model, recipe.seed)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in lora.items()}
    optimizer = torch.optim.SGD(list(lora.values()), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    reference = Reference(model, from_base_lora=True)
    metrics = _update(model, tokenizer, optimizer, scheduler, episodes(), recipe, local_device(), 1, reference)
    if is_main():
        torch.save({"metrics": metrics, "change": {n: p.detach() - before[n] for n, p in lora.items()}}, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
