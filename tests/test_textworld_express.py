"""The embedded TextWorldExpress environment behind the TextEnv interface."""

from __future__ import annotations

import pytest

from rwml_lite.config import TextWorldExpressSettings
from rwml_lite.envs import make_env
from rwml_lite.envs.textworld_express import require_java
from rwml_lite.errors import RwmlError

PARAMS = "numLocations=1,numItemsToPutAway=2,includeDoors=0,limitInventorySize=0"


@pytest.fixture
def env(java):
    env = make_env(TextWorldExpressSettings(game="twc", game_params=PARAMS), max_steps=10)
    yield env
    env.close()


def test_folds_hold_distinct_tasks(env):
    train, test = env.tasks("train"), env.tasks("test")
    assert len(train) == len(test) == 1000
    assert train[0] == "train-0" and not set(train) & set(test)
    with pytest.raises(RwmlError, match="does not exist"):
        env.tasks("valid")


def test_gold_path_wins(env):
    first = env.reset("train-0", seed=0)
    assert first.startswith("You are in the")
    assert "pick up objects" in env.goal
    for action in env.gold_actions():
        assert action in env.admissible_actions()
        step = env.step(action)
        assert step.valid
    assert step.won and step.done


def test_inadmissible_action_is_invalid_and_does_not_end_the_episode(env):
    env.reset("dev-3", seed=0)
    step = env.step("fly to the moon")
    assert not step.valid and not step.done and not step.won
    assert "not sure what you mean" in step.observation
    assert env.step("look around").valid


def test_step_limit_ends_the_episode(java):
    env = make_env(TextWorldExpressSettings(game="twc", game_params=PARAMS), max_steps=2)
    env.reset("train-1", seed=0)
    assert not env.step("look around").done
    assert env.step("look around").done
    env.close()


@pytest.mark.parametrize("game", ["cookingworld", "coin"])
def test_other_games_start(java, game):
    env = make_env(TextWorldExpressSettings(game=game), max_steps=5)
    assert env.reset(env.tasks("train")[0], seed=0)
    assert env.admissible_actions()
    env.close()


def test_missing_java_is_reported_with_the_install_command(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RwmlError, match="apt-get install -y openjdk-17-jre-headless"):
        require_java()
