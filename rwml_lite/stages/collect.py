"""collect: the agent plays `collect.num_tasks` training tasks `collect.rollouts_per_task` times at
`collect.temperature`; each episode is appended to rollouts.jsonl as it ends, so a killed collect resumes
where it stopped. Its key holds the model fields that pick the sampling path and its numerics: they key
every later stage through it."""

from __future__ import annotations

from pathlib import Path

from rwml_lite.config import Recipe
from rwml_lite.distributed import seed_sampling, shards
from rwml_lite.runfolder import RunFolder

NAME = "collect"
KEYED_BY = (
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
)


def outputs(folder: RunFolder) -> list[Path]:
    return [folder.rollouts, *shards(folder.rollouts)]


def run(recipe: Recipe, folder: RunFolder) -> dict:
    from rwml_lite.envs import list_tasks
    from rwml_lite.models import Sampling, sampler, user_simulators
    from rwml_lite.rollout import Play, episode_specs, run_episodes

    c = recipe.collect
    generator = sampler(recipe.model)
    users = user_simulators(recipe, "collect")
    seed_sampling(recipe.seed)
    episodes = run_episodes(
        folder.rollouts,
        episode_specs(list_tasks(recipe.env, c.split, c.num_tasks), c.split, c.rollouts_per_task, recipe.seed),
        Play(
            recipe.env,
            generator,
            Sampling(c.temperature, recipe.agent.max_new_tokens),
            recipe.agent,
            c.max_steps,
            "collect",
            users,
        ),
    )
    steps = sum(ep.num_steps for ep in episodes)
    invalid = sum(ep.num_invalid for ep in episodes)
    return {
        "episodes": len(episodes),
        "steps": steps,
        "invalid_steps": invalid,
        "success_rate": 100.0 * sum(ep.won for ep in episodes) / len(episodes),
    }
