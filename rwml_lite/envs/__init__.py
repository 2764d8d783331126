"""Environment factory: the recipe's `env` section -> a `TextEnv`."""

from __future__ import annotations

from rwml_lite.config import EnvSettings
from rwml_lite.envs.base import Step, TextEnv


def make_env(settings: EnvSettings, max_steps: int) -> TextEnv:
    if settings.name == "textworld_express":
        from rwml_lite.envs.textworld_express import TextWorldExpress

        return TextWorldExpress(settings.game, settings.game_params, max_steps)
    raise AssertionError(f"unhandled env {settings.name}")  # the schema's Literal rules this out


__all__ = ["Step", "TextEnv", "make_env"]
