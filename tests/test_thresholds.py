"""`tau_d: auto`: thresholds measured from distances whose values are known, and the scripted predictor whose
distances MiniLM gives, pinned to the values the choice lands on."""

from __future__ import annotations

import math

import pytest

from conftest import REPO, ScriptedGenerator, rwml_lite, triplet_record
from rwml_lite.config import load_recipe, recipe_warnings
from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling
from rwml_lite.reward import NextStateReward
from rwml_lite.runfolder import RunFolder
from rwml_lite.thresholds import reward_threshold, run_reward, threshold_for_share
from rwml_lite.worldmodel import closest_distances, distances, predict

INF = math.inf


def test_the_filter_threshold_marks_the_target_share_easy():
    closest = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, INF, INF]  # two triplets never tagged
    tau = threshold_for_share(closest, 0.3)
    assert tau == pytest.approx(0.175)  # halfway between the 3rd and 4th closest
    assert sum(d < tau for d in closest) / len(closest) == 0.3


def test_the_filter_threshold_is_never_looser_than_the_training_one():
    closest = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    assert threshold_for_share(closest, 0.6, ceiling=0.25) == pytest.approx(0.225)  # 4 easy, not 6
    assert threshold_for_share([INF] * 4, 0.3, ceiling=0.25) == 0.25  # nothing tagged: the ceiling itself


def test_the_reward_threshold_picks_the_band_threshold_whose_groups_see_hits_and_misses():
    groups = [
        [0.1, 0.2, 0.9, INF],  # a group that hits at 0.15 or more
        [0.3, 0.35, 0.8, 0.85],  # hits from 0.3
        [0.6, 0.7, INF, INF],  # hits only past the ceiling
    ]
    chosen = reward_threshold(groups, (0.2, 0.5), ceiling=0.5)
    # 0.25 hits 2 of 12 (17 %, under the band); 0.325 hits 3 (25 %) and mixes two of three groups, as 0.4 (4 hits)
    # does: the stricter one is taken; 0.45 and up mix no more groups
    assert chosen.tau_d == pytest.approx(0.325)
    assert (chosen.hit_rate, chosen.signal_share, chosen.in_band) == (pytest.approx(3 / 12), pytest.approx(2 / 3), True)


def test_a_band_no_threshold_reaches_gives_the_closest_and_says_so():
    groups = [[0.1, INF, INF, INF], [INF, INF, INF, INF]]  # one tag in eight predictions
    chosen = reward_threshold(groups, (0.2, 0.4), ceiling=0.5)
    assert chosen.hit_rate == 1 / 8 and not chosen.in_band
    assert 0.1 < chosen.tau_d <= 0.5


REAL = ["You take the coin.", "You are in the pantry. To the West you see the kitchen.",
        "Inventory: Your inventory is currently empty.", "You are in the corridor. There is also a coin."]  # fmt: skip
#: per triplet, the scripted predictor's four answers: exact, close, loose, unrelated or untagged
ANSWERS = [
    ["You take the coin.", "You pick up the coin.", "The coin is yours now.", None],
    ["You are in the pantry. To the West you see the kitchen.", "You are in the pantry.", "You enter a room.",
     "The sky is blue over the ocean."],
    ["Your inventory is empty.", "Inventory: nothing.", "You carry nothing.", None],
    ["You are in the corridor.", "There is a coin here.", "A long hallway.", "Bananas are yellow."],
]  # fmt: skip


def scripted_predictions():
    triplets = [
        triplet_record(f"t{i}#0/0", prompt=[{"role": "user", "content": f"#{i}"}], next_observation=real)
        for i, real in enumerate(REAL)
    ]

    def reply(prompt, sample):
        answer = ANSWERS[int(prompt[-1]["content"][1:])][sample]
        return "I do not know." if answer is None else f"{answer}</next_state>"

    return triplets, ScriptedGenerator(reply)


def test_thresholds_measured_on_a_scripted_predictors_minilm_distances(minilm):
    """Recorded on MiniLM (float32): the distances of paraphrases and unrelated sentences, and where `auto` puts
    the two thresholds. A CPU changes a float32 cosine by ~1e-7, far below the 1e-3 tolerance."""
    triplets, generator = scripted_predictions()
    reward = NextStateReward(minilm, tau_d=0.5)
    sampling = Sampling(prefill="<think> </think><next_state>")
    groups = distances(triplets, predict(generator, triplets, 4, sampling), reward)
    assert [g[0] for g in groups][:2] == [pytest.approx(0.0, abs=1e-5)] * 2  # the exact answers
    assert groups[0][3] == groups[2][3] == INF  # no tag

    chosen = reward_threshold(groups, (0.2, 0.4), ceiling=0.5)
    assert chosen.in_band and 0.2 <= chosen.hit_rate <= 0.4
    # recorded: the 4 hits are 3 exact or near-exact answers and "You pick up the coin." (d 0.129); the next
    # closest, "You are in the pantry." (0.192), stays out
    assert (chosen.tau_d, chosen.hit_rate, chosen.signal_share) == (
        pytest.approx(0.1606, abs=1e-3), pytest.approx(0.25), pytest.approx(0.75)
    )  # fmt: skip
    closest = closest_distances(triplets, generator, sampling, 4, reward)
    assert closest == pytest.approx([0.0, 0.0, 0.0630, 0.2944], abs=1e-3)
    tau = threshold_for_share(closest, 0.5, ceiling=chosen.tau_d)
    assert sum(d < tau for d in closest) == 2 and tau == pytest.approx(0.0315, abs=1e-3)


def test_a_run_without_a_measured_threshold_says_which_stage_measures_it(tmp_path):
    recipe = load_recipe(REPO / "recipes/demo_cpu.yaml", [f"run.dir={tmp_path}"])
    with pytest.raises(RwmlError, match="the filter stage measures it"):
        run_reward(recipe, RunFolder(tmp_path))
    fixed = load_recipe(REPO / "recipes/demo_cpu.yaml", ["reward.tau_d=0.3"])
    assert run_reward(fixed, RunFolder(tmp_path)).tau_d == 0.3


def test_an_evaluation_of_an_auto_threshold_needs_the_stage_that_measures_it():
    with pytest.raises(RwmlError, match="reward.tau_d is auto, measured by the filter stage"):
        load_recipe(REPO / "recipes/demo_cpu.yaml", ["stages=[collect, build, eval]"])


def test_the_papers_thresholds_with_another_embedder_are_warned():
    paper = ["reward.tau_d=0.2", "worldmodel.filter.tau_d=0.1"]
    [warning] = recipe_warnings(load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml", paper))
    assert "the paper set these for Qwen/Qwen3-Embedding-8B" in warning and "Qwen/Qwen3-Embedding-0.6B" in warning
    assert "auto" in warning
    assert recipe_warnings(load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml")) == []  # auto
    assert recipe_warnings(load_recipe(REPO / "recipes/alfworld_qwen2.5_7b_8gpu.yaml")) == []  # the paper's embedder
    assert recipe_warnings(load_recipe(REPO / "recipes/tau2_qwen3_8b.yaml")) == []


def test_plan_warns_of_the_papers_thresholds_with_another_embedder():
    result = rwml_lite("plan", "recipes/alfworld_qwen3_8b.yaml", "reward.tau_d=0.2", "--gpu-gb", "24")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: reward.tau_d=0.2: the paper set these for Qwen/Qwen3-Embedding-8B" in " ".join(
        result.stderr.split()
    )
