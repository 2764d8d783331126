"""Environment factory: the recipe's `env` section -> a `TextEnv`."""

from __future__ import annotations

from rwml_lite.config import EnvSettings
from rwml_lite.envs.base import Step, TextEnv
from rwml_lite.models import Generator


def make_env(settings: EnvSettings, max_steps: int, users: list[Generator] | None = None) -> TextEnv:
    """The recipe's environment; `users` are the models that play the customer in tau2 conversations."""
    if settings.name == "textworld_express":
        from rwml_lite.envs.textworld_express import TextWorldExpress

        return TextWorldExpress(settings.game, settings.game_params, max_steps, settings.brief_rooms)
    if settings.name == "alfworld":
        from rwml_lite.envs.alfworld import ALFWorld

        return ALFWorld(max_steps)
    if settings.name == "tau2":
        from rwml_lite.envs.tau2.episode import Tau2Env
        from rwml_lite.envs.tau2.upstream import use_judge
        from rwml_lite.models import Sampling

        use_judge(settings.judge_endpoint, settings.judge_model)
        sampling = Sampling(settings.user_temperature, settings.user_max_new_tokens)
        judged, policy = bool(settings.judge_endpoint), settings.world_model_policy
        return Tau2Env(settings.domains, max_steps, users or [], sampling, settings.max_errors, judged, policy)
    raise AssertionError(f"unhandled env {settings.name}")  # the schema's Literal rules this out


def report_section(settings: EnvSettings, results: dict[str, dict]) -> list[str] | None:
    """The environment's own lines in report.md after the evaluation table, or None for the generic
    success-by-task-type table."""
    if settings.name == "tau2":
        from rwml_lite.envs.tau2.report import section

        return section(results, settings.domains)
    return None


def list_tasks(settings: EnvSettings, split: str, count: int) -> list[str]:
    """The first `count` task ids of a split (the order is the environment's own, so it is stable)."""
    env = make_env(settings, max_steps=1)
    try:
        return env.tasks(split)[:count]
    finally:
        env.close()


__all__ = ["Step", "TextEnv", "list_tasks", "make_env", "report_section"]
