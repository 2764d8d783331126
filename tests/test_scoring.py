"""What the filter, GRPO and the evaluation score, checked at the paper's thresholds with answers
whose score is known: the scripted model answers each world-model prompt with that triplet's own
real next observation (a hit at any threshold) or with an unrelated sentence (far outside tau_d).
Scoring the wrong text (the prefill twice), the wrong real state or the wrong triplet changes these
numbers. The trainers (the filter's SFT) run for real on the tiny Qwen3.
"""

from __future__ import annotations

import json

import pytest

from conftest import ScriptedGenerator, tiny_recipe, triplet_record
from rwml_lite.config import load_recipe
from rwml_lite.models import Sampling
from rwml_lite.prompts import RWML_INSTRUCTION, WM_SFT_INSTRUCTION
from rwml_lite.records import read_jsonl
from rwml_lite.reward import NextStateReward
from rwml_lite.stages.eval import world_model_score
from rwml_lite.worldmodel import closest_distances

PREFILL = "<think> </think><next_state>"
REAL = "You open the wardrobe. It's empty inside."
WRONG = "The sky is blue over the ocean."


def triplet(i: int):
    return triplet_record(f"e/{i}", prompt=[{"role": "user", "content": f"#{i}"}], next_observation=f"{REAL} ({i})")


def answer_with_the_real_state(prompt, sample) -> str:
    """What the model writes after the prefill: the triplet's own real next observation."""
    return triplet(int(prompt[-1]["content"][1:])).next_observation + "</next_state>"


def test_grpo_scores_trls_completion_after_the_prefill(minilm):
    reward = NextStateReward(minilm, tau_d=0.2, prefill=PREFILL)
    completions = [answer_with_the_real_state([{"content": "#0"}], 0), WRONG + "</next_state>"]
    assert reward(prompts=None, completions=completions, real_next_state=[triplet(0).next_observation] * 2) == [
        1.0,
        0.0,
    ]


def test_the_filter_finds_a_triplet_answered_exactly_easy(minilm):
    strict = NextStateReward(minilm, tau_d=0.1, prefill=PREFILL)  # the reward knows the prefill, for TRL
    sampling = Sampling(prefill=PREFILL)
    closest = closest_distances(
        [triplet(0), triplet(1)], ScriptedGenerator(answer_with_the_real_state), sampling, 3, strict
    )
    assert [d < 0.1 for d in closest] == [True, True]


def test_the_evaluation_scores_an_exact_answer_one(minilm, tmp_path):
    reward = NextStateReward(minilm, tau_d=0.2, prefill=PREFILL)
    sampling = Sampling(prefill=PREFILL)
    wm = world_model_score(
        ScriptedGenerator(answer_with_the_real_state),
        [triplet(0), triplet(1)],
        reward,
        2,
        sampling,
        tmp_path / "wm.jsonl",
    )
    assert (wm["wm_score"], wm["wm_hit_rate"], wm["wm_tag_rate"]) == (1.0, 100.0, 100.0)
    assert wm["wm_hits"] == {"mean": 100.0, "low": None, "high": None, "units": 1}  # one task: no interval over tasks
    assert wm["wm_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert [r["similarities"] for r in read_jsonl(tmp_path / "wm.jsonl")] == [[pytest.approx(1.0, abs=1e-5)] * 2] * 2


def _context(text: str) -> str:
    """A world-model prompt's context, whichever instruction ends it (RWML's, or WM SFT's for the filter model)."""
    return text.removesuffix(RWML_INSTRUCTION).removesuffix(WM_SFT_INSTRUCTION)


class KnownAnswers:
    """The agent takes the admissible actions in turn (so next observations differ); each world-model
    prompt (RWML's or WM SFT's) gets its own triplet's real next observation when that is in `right`, else
    an unrelated sentence."""

    def __init__(self):
        self.real_of: dict[str, str] = {}  # the prompt's text -> its triplet's real next observation
        self.right: set[str] = set()
        self.turns = 0

    def learn(self, triplets: list[dict], right: set[str]) -> None:
        self.real_of.update({_context(t["prompt"][-1]["content"]): t["next_observation"] for t in triplets})
        self.right |= right

    def reply(self, prompt, sample) -> str:
        text = _context(prompt[-1]["content"])
        if "Potential action:" not in text:
            admissible = text.split("Admissible actions: ")[1].split("\n")[0].split(", ")
            self.turns += 1
            return f"<think> </think><action>{admissible[self.turns % len(admissible)]}</action>"
        return (
            self.real_of[text] if text in self.real_of and self.real_of[text] in self.right else WRONG
        ) + "</next_state>"


@pytest.fixture
def scripted_run(tmp_path, tiny_qwen3, java, monkeypatch):
    """A run folder after collect and build with the scripted model, and the model itself: every
    generate call of the pipeline goes to it, training still runs the tiny Qwen3."""
    import rwml_lite.models.hf as hf
    from rwml_lite.pipeline import run

    answers = KnownAnswers()
    monkeypatch.setattr(hf, "generator", lambda settings, adapter=None: ScriptedGenerator(answers.reply))
    path = tiny_recipe(
        tmp_path,
        tiny_qwen3,
        collect={"num_tasks": 3, "rollouts_per_task": 2, "max_steps": 4},
        worldmodel={"history": 1, "val_fraction": 0.3, "prefill": PREFILL,
                    "filter": {"samples": 2, "tau_d": 0.1, "keep_easy_p": 1.0, "epochs": 1, "batch_size": 4, "max_new_tokens": 24}},
        reward={"tau_d": 0.2, "kind": "binary"},
    )  # fmt: skip
    recipe = load_recipe(path)
    folder = run(recipe, ["collect", "build"])
    return recipe, folder, answers


def test_end_to_end_the_filter_marks_exactly_the_triplets_answered_right(scripted_run):
    from rwml_lite.pipeline import run

    recipe, folder, answers = scripted_run
    train = read_jsonl(folder.wm("train.jsonl"))
    right = {t["next_observation"] for t in train[::2]}  # every other training triplet is answered exactly
    answers.learn(train, right)
    run(recipe, ["filter"])
    stats = json.loads(folder.wm("filter.json").read_text())
    expected_easy = sum(t["next_observation"] in right for t in train)
    assert len(train) >= 6 and 0 < expected_easy < len(train)
    assert (stats["easy"], stats["kept"]) == (expected_easy, len(train))  # keep_easy_p 1: every triplet kept
    assert stats["easy_fraction"] == expected_easy / len(train)
    kept = read_jsonl(folder.wm("rwml.jsonl"))
    assert [t["easy"] for t in kept] == [t["next_observation"] in right for t in train]


def test_end_to_end_the_evaluation_scores_the_share_answered_right(scripted_run):
    from rwml_lite.pipeline import run

    recipe, folder, answers = scripted_run
    val = read_jsonl(folder.wm("val.jsonl"))
    right = {t["next_observation"] for t in val[: len(val) // 2 + 1]}
    answers.learn(val, right)
    share = sum(t["next_observation"] in right for t in val) / len(val)
    assert 0 < share < 1
    run(recipe, ["eval"])
    base = json.loads(folder.eval("base.json").read_text())
    assert base["wm_score"] == pytest.approx(share) and base["wm_hit_rate"] == pytest.approx(100 * share)
    assert base["wm_tag_rate"] == 100.0 and base["wm_tau_d"] == 0.2
    records = read_jsonl(folder.eval("wm_base.jsonl"))
    assert [r["rewards"] for r in records] == [[1.0 if t["next_observation"] in right else 0.0] for t in val]
    exact = [r["similarities"][0] for r, t in zip(records, val) if t["next_observation"] in right]
    assert exact == [pytest.approx(1.0, abs=1e-5)] * len(exact)  # the prediction itself was scored, not the prefill


def test_hit_rates_are_reported_per_target_kind_with_each_kinds_measure(minilm, tmp_path):
    """A ROUGE-measured target (tau2's tool replies) hits when its rounded ROUGE-L is 1, an embedded one
    (a user reply) when its cosine is within tau_d; the hit rates are reported per target kind."""
    tool_real, user_real = '{"order_id": "string", "status": "string"}', "User: Thanks, that is all."
    triplets = [
        triplet_record(
            "e/t", kind="tool", measure="rouge", prompt=[{"role": "user", "content": "#t"}], next_observation=tool_real
        ),
        triplet_record("e/u", kind="user", prompt=[{"role": "user", "content": "#u"}], next_observation=user_real),
    ]
    # the tool reply half right (ROUGE 0.6: no hit, though its cosine is close), the user reply exact
    answers = {"#t": '{"order_id": "string"}</next_state>', "#u": user_real + "</next_state>"}
    generator = ScriptedGenerator(lambda prompt, sample: answers[prompt[-1]["content"]])
    wm = world_model_score(
        generator, triplets, NextStateReward(minilm, tau_d=0.4), 1, Sampling(prefill=PREFILL), tmp_path / "wm.jsonl"
    )
    assert wm["wm_by_kind"]["tool"] == {"wm_score": 0.6, "wm_hit_rate": 0.0, "wm_tag_rate": 100.0}
    assert wm["wm_by_kind"]["user"] == {"wm_score": 1.0, "wm_hit_rate": 100.0, "wm_tag_rate": 100.0}
    assert (wm["wm_score"], wm["wm_hit_rate"]) == (pytest.approx(0.8), 50.0)
