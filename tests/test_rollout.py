"""Playing episodes: actions parsed from replies, invalid turns recorded, episodes saved as they end."""

from __future__ import annotations

from conftest import ScriptedGenerator
from rwml_lite.config import AgentSettings, TextWorldExpressSettings
from rwml_lite.envs import make_env
from rwml_lite.models import Sampling
from rwml_lite.prompts import parse_action
from rwml_lite.records import read_jsonl
from rwml_lite.rollout import NO_ACTION_FEEDBACK, Play, episode_specs, run_episodes

SETTINGS = TextWorldExpressSettings(
    game="twc", game_params="numLocations=1,numItemsToPutAway=1,includeDoors=0,limitInventorySize=0"
)


def test_parse_action_takes_the_tag_and_matches_admissible_spelling():
    admissible = ["take clean brown shirt", "look around"]
    assert (
        parse_action("<think>hm</think><action> Take  clean brown SHIRT </action>", admissible)
        == "take clean brown shirt"
    )
    assert parse_action("I would look around.", admissible) is None
    assert parse_action("<action>dance</action>", admissible) == "dance"  # parsed, but inadmissible
    assert parse_action("first I look around, then take clean brown shirt", admissible, mode="mention") == "look around"


def test_episodes_record_invalid_turns_and_continue(tmp_path, java):
    replies = iter(["no tag at all", "<action>fly to the moon</action>", "<action>look around</action>"] * 10)
    generator = ScriptedGenerator(lambda prompt, i: next(replies))
    path = tmp_path / "rollouts.jsonl"
    [episode] = run_episodes(
        path,
        episode_specs(["train-0"], "train", 1, seed=0),
        Play(SETTINGS, generator, Sampling(), AgentSettings(parallel_episodes=1), max_steps=5, label="test"),
    )
    steps = episode.steps
    assert [s.valid for s in steps] == [False, False, True, False, False]
    assert steps[0].action is None and steps[0].next_observation == NO_ACTION_FEEDBACK
    assert steps[1].action == "fly to the moon" and "not sure" in steps[1].next_observation
    # the environment did not move on the unparseable turn: the next turn starts from the same observation
    assert steps[1].observation == steps[0].observation
    assert episode.num_invalid == 4 and episode.num_steps == 5 and not episode.won


def test_gold_policy_wins_and_resume_does_not_replay(tmp_path, java):
    env = make_env(SETTINGS, 10)
    env.reset("train-0", 0)
    gold = iter(env.gold_actions())
    env.close()
    generator = ScriptedGenerator(lambda prompt, i: f"<think>next step</think><action>{next(gold)}</action>")
    path = tmp_path / "rollouts.jsonl"
    specs = episode_specs(["train-0"], "train", 1, seed=0)
    play = lambda gen: run_episodes(path, specs, Play(SETTINGS, gen, Sampling(), AgentSettings(), 10, "t"))  # noqa: E731

    [episode] = play(generator)
    assert episode.won and episode.num_invalid == 0
    assert episode.steps[-1].won

    idle = ScriptedGenerator(lambda prompt, i: "never asked")
    assert play(idle) == [episode]
    assert idle.calls == 0 and len(read_jsonl(path)) == 1


def test_many_episodes_share_each_generate_call(tmp_path, java):
    generator = ScriptedGenerator(lambda prompt, i: "<action>look around</action>")
    specs = episode_specs(["train-0", "train-1", "train-2"], "train", 2, seed=0)
    episodes = run_episodes(
        tmp_path / "r.jsonl", specs, Play(SETTINGS, generator, Sampling(), AgentSettings(parallel_episodes=6), 3, "t")
    )
    assert sorted(e.episode_id for e in episodes) == sorted(s.episode_id for s in specs)
    assert generator.calls == 3  # 6 episodes x 3 steps, all live together
    assert {(e.split, e.task_type) for e in episodes} == {("train", "twc")}


def test_worker_processes_play_the_same_episodes(tmp_path, java):
    """With env.workers the games are stepped in worker processes; a deterministic agent sees the same games."""
    reply = lambda prompt, i: "<action>look around</action>"  # noqa: E731
    specs = episode_specs(["train-0", "train-1", "train-2"], "train", 1, seed=0)
    local = run_episodes(
        tmp_path / "a.jsonl", specs, Play(SETTINGS, ScriptedGenerator(reply), Sampling(), AgentSettings(), 3, "t")
    )
    pooled = run_episodes(
        tmp_path / "b.jsonl",
        specs,
        Play(SETTINGS.model_copy(update={"workers": 2}), ScriptedGenerator(reply), Sampling(), AgentSettings(), 3, "t"),
    )
    assert [e.steps for e in local] == [e.steps for e in pooled]
