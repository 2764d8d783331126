"""One policy-stage update (forward + backward over every agent turn of a step) on the CPU demo:
LoRA in the last N layers vs every layer, and turns whose advantage is 0 skipped vs forwarded.

The step is real: SmolLM2-135M (the demo's model, base weights) plays B games x G episodes of the
demo's TextWorldExpress `coin` with numbered choices; its turns get their group advantages as in
the policy stage. Each variant runs `encode_turns` + `reply_logps` + `turn_loss` + backward over those turns in
micro batches, in this process, on the same data. Skipping zero-advantage turns changes nothing in
the gradient (checked: the LoRA gradients of both ways are compared) because those turns are in
the loss's normaliser but multiply a zero; LoRA in fewer layers is another model (the recipe field
`model.lora.last_layers`), faster because backward stops at the lowest adapted layer.

    python bench/policy_update.py [--recipe recipes/demo_cpu.yaml] [--last-layers 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from rwml_lite.config import load_recipe
from rwml_lite.envs import list_tasks
from rwml_lite.models import Sampling
from rwml_lite.models.hf import generator, policy_model
from rwml_lite.rollout import Play, run_episodes
from rwml_lite.train.policy import group_specs, step_tasks
from rwml_lite.train.turns import completion_tokens, encode_turns, reply_logps, step_turns, turn_loss


def update(model, tokenizer, turns, normalizer: float, micro: int, temperature: float) -> float:
    """Seconds for one forward + backward over `turns` in micro batches (gradients accumulate)."""
    model.zero_grad(set_to_none=True)
    started = time.perf_counter()
    for i in range(0, len(turns), micro):
        batch = encode_turns(tokenizer, turns[i : i + micro])
        loss, _ = turn_loss(reply_logps(model, batch, temperature), batch, normalizer)
        loss.backward()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="recipes/demo_cpu.yaml")
    parser.add_argument("--last-layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, ["model.lora.last_layers=null"])
    p = recipe.policy
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        tasks = step_tasks(list_tasks(recipe.env, p.split, 1000), 1, p.tasks_per_step, recipe.seed)
        episodes = run_episodes(
            Path(folder) / "step.jsonl",
            group_specs(tasks, p.split, p.group_size, 1, recipe.seed),
            Play(
                recipe.env,
                generator(recipe.model),
                Sampling(p.temperature, recipe.agent.max_new_tokens),
                recipe.agent,
                p.episode_max_steps,
                "episodes",
            ),
            keep_prompts=True,
        )
    turns, equal_groups = step_turns(episodes, p.invalid_action_penalty, p.scale_rewards == "group", p.group_stats)
    trained = [t for t in turns if t.advantage != 0.0]
    print(f"one step: {len(episodes)} episodes, {len(turns)} turns, {len(trained)} with a nonzero advantage "
          f"({equal_groups} of {len(tasks)} groups with equal returns)")  # fmt: skip

    def timed(last_layers, which) -> tuple[float, dict]:
        settings = recipe.model.model_copy(
            update={"lora": recipe.model.lora.model_copy(update={"last_layers": last_layers})}
        )
        model, tokenizer = policy_model(settings, recipe.seed)
        normalizer = completion_tokens(tokenizer, turns)
        seconds = min(update(model, tokenizer, which, normalizer, p.micro_batch_size, p.temperature)
                      for _ in range(args.repeats))  # fmt: skip
        return seconds, {n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None}

    every, grads_every = timed(None, turns)
    skipping, grads_skipping = timed(None, trained)
    top, _ = timed(args.last_layers, trained)
    differ = max((grads_every[n] - grads_skipping[n]).abs().max().item() for n in grads_every)
    print(f"LoRA in every layer, every turn forwarded:     {every:6.1f} s")
    print(f"LoRA in every layer, zero-advantage skipped:   {skipping:6.1f} s  ({every / skipping:.2f}x; "
          f"largest gradient difference {differ:.1e})")  # fmt: skip
    print(f"LoRA in the last {args.last_layers} layers, zero-advantage skipped: {top:6.1f} s  "
          f"({every / top:.2f}x over the first line)")  # fmt: skip


if __name__ == "__main__":
    main()
