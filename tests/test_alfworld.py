"""ALFWorld through our environment class, on the real games of the shared archive."""

from __future__ import annotations

import json
import random

import pytest

from conftest import ScriptedGenerator, rwml_lite, tiny_recipe
from rwml_lite.config import AgentSettings, ALFWorldSettings
from rwml_lite.envs import make_env
from rwml_lite.envs.alfworld import NOTHING_HAPPENS, TASK_TYPES, games_root
from rwml_lite.envs.pool import EnvPool
from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling
from rwml_lite.rollout import NO_ACTION_FEEDBACK, Play, episode_specs, run_episodes
from rwml_lite.schemas import read_episodes
from rwml_lite.worldmodel import build_triplets

ALFWORLD = ALFWorldSettings()


@pytest.fixture(scope="module")
def env(alfworld_data):
    env = make_env(ALFWORLD, max_steps=30)
    yield env
    env.close()


def walkthrough(task_id: str) -> list[str]:
    return json.loads((games_root() / task_id / "game.tw-pddl").read_text())["walkthrough"]


def test_splits_hold_the_known_games_and_task_types(env):
    seen, unseen = env.tasks("valid_seen"), env.tasks("valid_unseen")
    assert (len(seen), len(unseen), len(env.tasks("train"))) == (140, 134, 3553)
    assert {env.task_type(t) for t in seen + unseen} == set(TASK_TYPES)
    assert [env.task_type(t) for t in seen[:6]] == list(TASK_TYPES)  # the first tasks cover every type
    with pytest.raises(RwmlError, match="valid_seen, valid_unseen"):
        env.tasks("test")


#: games walked per task type and split: all 274 take 13 minutes of a 2-core CI run (they all won on 2026-12-06)
GAMES_PER_TYPE = 3


@pytest.mark.slow
def test_walkthrough_wins_evaluation_games_of_every_task_type(env):
    """The oracle that the adapter is faithful: the first games of each task type in valid_seen and valid_unseen."""
    games = [
        task
        for split in ("valid_seen", "valid_unseen")
        for kind in TASK_TYPES
        for task in [t for t in env.tasks(split) if env.task_type(t) == kind][:GAMES_PER_TYPE]
    ]
    lost, invalid = [], []
    with EnvPool(ALFWORLD, max_steps=30, workers=2) as pool:
        for start in range(0, len(games), 12):
            batch = dict(enumerate(games[start : start + 12]))
            plans = {slot: walkthrough(task) for slot, task in batch.items()}
            pool.reset({slot: (task, 0) for slot, task in batch.items()})
            won = {}
            for i in range(max(map(len, plans.values()))):
                outcomes = pool.step({slot: plan[i] for slot, plan in plans.items() if i < len(plan)})
                for slot, outcome in outcomes.items():
                    won[slot] = outcome.step.won
                    if not outcome.step.valid:
                        invalid.append((batch[slot], plans[slot][i]))
            lost += [batch[slot] for slot in batch if not won[slot]]
    assert len(games) == 2 * len(TASK_TYPES) * GAMES_PER_TYPE
    assert lost == [] and invalid == []


def test_random_admissible_policy_never_crashes_and_wins_only_when_done(env):
    rng = random.Random(0)
    for task in env.tasks("valid_unseen")[:3]:
        first = env.reset(task, seed=0)
        assert first.startswith("You are in the middle of a room") and env.goal
        assert "_" not in first  # object names are demangled: "cabinet 3", not "cabinet_bar__minus_..."
        for _ in range(15):
            step = env.step(rng.choice(env.admissible_actions()))
            assert step.valid or step.observation == NOTHING_HAPPENS
            assert not step.won or step.done
            if step.done:
                break
        assert step.won is False or step.done


def test_unparseable_inadmissible_and_nothing_happens_are_invalid_and_the_episode_goes_on(tmp_path, alfworld_data):
    task = make_env(ALFWORLD, 30).tasks("valid_seen")[0]
    plan = walkthrough(task)
    replies = iter(["I will look around", "<action>fly to the moon</action>", *(f"<action>{a}</action>" for a in plan)])
    [episode] = run_episodes(
        tmp_path / "r.jsonl",
        episode_specs([task], "valid_seen", 1, 0),
        Play(ALFWORLD, ScriptedGenerator(lambda p, i: next(replies)), Sampling(), AgentSettings(), 30, "t"),
    )
    steps = episode.steps
    assert steps[0].next_observation == NO_ACTION_FEEDBACK and not steps[0].valid
    assert steps[1].next_observation == NOTHING_HAPPENS and not steps[1].valid
    assert all(s.valid for s in steps[2:]) and episode.won and episode.num_invalid == 2
    assert episode.task_type == task.split("/")[1].split("-")[0] and episode.split == "valid_seen"


def test_collect_then_build_keeps_what_the_engine_returned(tmp_path, env):
    tasks = env.tasks("train")[:3]
    # one episode at a time, each: first walkthrough action, one invalid action, the rest of the walkthrough
    replies = iter(
        [f"<action>{a}</action>" for t in tasks for a in [walkthrough(t)[0], "go to the moon", *walkthrough(t)[1:]]]
    )
    path = tmp_path / "rollouts.jsonl"
    episodes = run_episodes(
        path,
        episode_specs(tasks, "train", 1, 0),
        Play(
            ALFWORLD,
            ScriptedGenerator(lambda p, i: next(replies)),
            Sampling(),
            AgentSettings(parallel_episodes=1),
            30,
            "t",
        ),
    )
    assert all(ep.won for ep in episodes)
    triplets, dropped = build_triplets(episodes, history=5)
    assert dropped == 3 and len(triplets) == sum(len(walkthrough(t)) for t in tasks)
    for ep in read_episodes(path):  # replay each episode's valid actions on a fresh game
        env.reset(ep.task_id)
        for triplet in (t for t in triplets if t.episode_id == ep.episode_id):
            assert triplet.next_observation == env.step(triplet.action).observation


@pytest.mark.slow
def test_tiny_model_trains_end_to_end_on_real_games(tmp_path, tiny_qwen3, alfworld_data):
    recipe = tiny_recipe(
        tmp_path, tiny_qwen3,
        env={"name": "alfworld", "workers": 2},
        # the tiny model answers ALFWorld's long rooms with an admissible action mostly when it samples near its
        # mode (T 0.2: 17 of 32 steps valid here, one game never), and the split by task needs two games with one
        collect={"split": "train", "num_tasks": 4, "rollouts_per_task": 2, "max_steps": 4, "temperature": 0.2},
        eval={"splits": ["valid_seen", "valid_unseen"], "num_tasks": 1, "runs": 1, "max_steps": 3, "temperature": 1.0},
    )  # fmt: skip
    result = rwml_lite("train", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "ID (valid_seen)" in report and "OOD (valid_unseen)" in report and "| success % pooled |" in report
    assert "pooled: 50 % ID (valid_seen), 50 % OOD (valid_unseen)" in report  # one game of each split, pooled
    rwml = json.loads((tmp_path / "run" / "eval" / "rwml.json").read_text())
    weighted = 2 / 3 * rwml["success"]["valid_seen"]["mean"] + 1 / 3 * rwml["success"]["valid_unseen"]["mean"]
    assert "Weighted as the paper's AVG (2/3 ID + 1/3 OOD): base" in report and f"rwml {weighted:.1f}." in report
    assert "| RWML | 34.4 | 29.2 | 32.6 |" in report  # the paper's numbers beside ours, same columns
    assert set(rwml["success"]) == {"valid_seen", "valid_unseen", "all"}


def test_an_admissible_action_with_surrounding_spaces_is_valid_as_the_engine_executes_it(env):
    task = env.tasks("valid_seen")[0]
    plan = walkthrough(task)
    env.reset(task)
    spaced = env.step(f" {plan[0]} ")
    env.reset(task)
    plain = env.step(plan[0])
    assert spaced.valid and spaced.observation == plain.observation != NOTHING_HAPPENS


def test_a_finished_game_repeats_its_last_observation_as_alfworlds_own_env_does(env):
    task = env.tasks("valid_seen")[0]
    env.reset(task)
    for action in walkthrough(task):
        last = env.step(action)
    assert last.done and last.won
    again = env.step("look")  # the episode is over: nothing more is played
    assert (again.observation, again.done, again.won, again.valid, again.reward) == (
        last.observation,
        True,
        True,
        False,
        0.0,
    )
