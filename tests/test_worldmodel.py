"""Triplets, the split by task, and the too-easy filter."""

from __future__ import annotations

import math

import pytest

from conftest import ScriptedGenerator, episode_record, triplet_record
from rwml_lite.models import Sampling
from rwml_lite.prompts import extract_next_state
from rwml_lite.reward import NextStateReward
from rwml_lite.worldmodel import build_triplets, closest_distances, split_by_task, subsample_easy


def episode(eid: str, steps: list[tuple[str, str | None, str, bool]]):
    return episode_record(
        eid, [{"observation": o, "action": a, "next_observation": n, "valid": v} for o, a, n, v in steps]
    )


def test_triplets_keep_valid_steps_with_a_window_of_valid_history():
    ep = episode("e#0", [
        ("room", "take shirt", "You take the shirt.", True),
        ("You take the shirt.", None, "Invalid response", False),
        ("You take the shirt.", "dance", "Unknown action", False),
        ("You take the shirt.", "open wardrobe", "You open the wardrobe.", True),
        ("You open the wardrobe.", "put shirt in wardrobe", "You put the shirt in the wardrobe.", True),
    ])  # fmt: skip
    triplets, dropped = build_triplets([ep], history=1)
    assert dropped == 2
    assert [t.action for t in triplets] == ["take shirt", "open wardrobe", "put shirt in wardrobe"]
    assert triplets[1].history == [("room", "take shirt")]
    assert triplets[2].history == [("You take the shirt.", "open wardrobe")]  # H = 1
    assert triplets[2].target == "<think> </think><next_state>You put the shirt in the wardrobe.</next_state>"
    prompt = triplets[2].prompt[-1]["content"]
    assert "Potential action: put shirt in wardrobe" in prompt and "<next_state>" in prompt
    assert "room" not in prompt  # outside the window


def test_split_is_by_task_and_seeded():
    """10 tasks x 2 episodes x 3 triplets: a tenth of the tasks (one) holds out both its episodes."""
    triplets = [triplet_record(f"task{i}#{r}/{t}") for i in range(10) for r in range(2) for t in range(3)]
    train, val = split_by_task(triplets, 0.1, seed=0)
    assert len(val) == 6 and len(train) == 54
    assert len({t.task_id for t in val}) == 1 and len({t.episode_id for t in val}) == 2
    assert not {t.task_id for t in train} & {t.task_id for t in val}
    assert split_by_task(triplets, 0.1, seed=0) == (train, val)
    assert split_by_task(triplets, 0.1, seed=1) != (train, val)


def test_filter_marks_easy_when_at_least_one_sample_hits(minilm):
    triplets = [
        triplet_record(
            f"e/{i}", prompt=[{"role": "user", "content": f"#{i}"}], next_observation=f"You take the item number {i}."
        )
        for i in range(4)
    ]

    def reply(prompt, sample):
        i = int(prompt[-1]["content"][1:])
        # triplet 0: every sample right; 1: only the last of 3 right; 2: all wrong; 3: no tag
        right = i == 0 or (i == 1 and sample == 2)
        if i == 3:
            return "I do not know."
        return f"<next_state>{f'You take the item number {i}.' if right else 'The sky is blue over the ocean.'}</next_state>"

    closest = closest_distances(triplets, ScriptedGenerator(reply), Sampling(), 3, NextStateReward(minilm, tau_d=0.1))
    assert [d < 0.1 for d in closest] == [True, True, False, False]
    assert closest[0] == pytest.approx(0.0, abs=1e-5) and closest[1] == pytest.approx(0.0, abs=1e-5)  # one is enough
    assert 0.5 < closest[2] < 2 and closest[3] == math.inf  # far, and no tag at all


def test_keep_probability_of_easy_triplets_is_seeded():
    triplets = [triplet_record(f"e/{i}") for i in range(400)]
    easy = [i % 2 == 0 for i in range(400)]  # 200 easy, 200 hard
    kept = subsample_easy(triplets, easy, keep_p=0.1, seed=0)
    kept_easy = [t for t in kept if t.easy]
    assert len(kept) - len(kept_easy) == 200  # every hard triplet stays
    assert 8 <= len(kept_easy) <= 35  # ~20 of 200
    assert subsample_easy(triplets, easy, 0.1, seed=0) == kept
    assert len([t for t in subsample_easy(triplets, easy, 0.0, seed=0) if t.easy]) == 0
    assert len(subsample_easy(triplets, easy, 1.0, seed=0)) == 400


def test_next_state_extraction_takes_the_last_tag():
    assert extract_next_state("<next_state>a</next_state> then <next_state> b </next_state>") == "b"
    assert extract_next_state("<next_state>open") is None


def test_wm_sft_trains_on_the_kept_triplets_behind_the_no_reasoning_prompt(tmp_path, tiny_qwen3, monkeypatch):
    from safetensors.torch import load_file

    from conftest import tiny_recipe
    from rwml_lite.config import load_recipe
    from rwml_lite.prompts import RWML_INSTRUCTION, WM_SFT_INSTRUCTION
    from rwml_lite.runfolder import RunFolder
    from rwml_lite.train import sft

    recipe = load_recipe(
        tiny_recipe(tmp_path, tiny_qwen3, wm_sft={"epochs": 2, "batch_size": 2, "learning_rate": 0.01})
    )
    steps = [("room", "take shirt", "You take the shirt.", True), ("You take the shirt.", "look", "A bedroom.", True)]
    triplets, _ = build_triplets([episode("e#0", steps), episode("e#1", steps[:1])], history=1)
    built = {}

    def keep_trainer(*args, **kwargs):  # the real trainer, remembered to look at what it trained on
        built["trainer"] = trainer = real(*args, **kwargs)
        return trainer

    real = sft.build_trainer
    monkeypatch.setattr(sft, "build_trainer", keep_trainer)
    adapter = sft.train_wm_sft(recipe, triplets, RunFolder(tmp_path / "run"))

    trainer = built["trainer"]
    rows = list(trainer.train_dataset)
    assert len(rows) == len(triplets) == 3
    prompts = [trainer.processing_class.decode(r["input_ids"]) for r in rows]
    assert all(WM_SFT_INSTRUCTION in p and RWML_INSTRUCTION not in p for p in prompts)
    assert all("<think> </think><next_state>" in p for p in prompts)  # the empty-think target is learned
    assert trainer.state.global_step == 4  # 3 triplets in batches of 2, 2 epochs
    assert trainer.args.learning_rate == 0.01 and trainer.args.num_train_epochs == 2
    weights = load_file(adapter / "adapter_model.safetensors")
    assert any(v.abs().max() > 0 for k, v in weights.items() if "lora_B" in k)
