"""`rwml-lite selftest RECIPE`: every stage of the recipe at toy scale on this machine, in a throwaway folder, each
measured, and a forecast of the full recipe that scales those measurements by the recipe's own volumes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import rwml_lite, tiny_recipe

STAGES = ["collect", "build", "filter", "rwml", "wm_sft", "policy", "eval"]


@pytest.mark.slow
def test_selftest_runs_every_stage_at_toy_scale_and_forecasts_the_full_recipe(tmp_path, tiny_qwen3, java):
    # the full recipe: 3 tasks x 2 rollouts (2 waves of 4 parallel episodes), GRPO 10 steps, Policy RL 5 steps
    filter_keeping_all = {"samples": 2, "epochs": 1, "batch_size": 4, "max_new_tokens": 24, "keep_easy_p": 1.0}
    recipe = tiny_recipe(
        tmp_path, tiny_qwen3, STAGES, grpo={"max_steps": 10}, eval={"num_tasks": 2, "runs": 1},
        policy={"tasks_per_step": 2, "group_size": 2, "max_steps": 5, "episode_max_steps": 2},
        worldmodel={"history": 1, "val_fraction": 0.3, "filter": filter_keeping_all},
    )  # fmt: skip
    out, toy = tmp_path / "selftest.json", tmp_path / "toy"
    result = rwml_lite("selftest", str(recipe), "--out", str(out), "--keep", str(toy))
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(out.read_text())
    stages = {m["stage"]: m for m in measured["stages"]}
    assert list(stages) == STAGES and all(m["seconds"] >= 0 and m["peak_rss_gib"] > 0 for m in stages.values())
    assert not (tmp_path / "run").exists()  # the recipe's own run folder is untouched
    played = json.loads((toy / "run/manifest.json").read_text())["stages"]["collect"]["summary"]
    assert played["episodes"] == 2 * 2  # one wave: 2 tasks x 2 rollouts at 4 parallel episodes
    # the full collect's 6 episodes make half as many turns again, in rounds of 4 episodes at the measured rate
    [rounds] = stages["collect"]["parts"]
    assert rounds["unit"] == "agent round" and rounds["per_unit"] > 0
    assert rounds["expected_units"] == pytest.approx(played["steps"] / 2 / 4)
    assert stages["collect"]["expected_seconds"] == pytest.approx(
        stages["collect"]["seconds"] + rounds["expected_units"] * rounds["per_unit"]
    )
    # each trainer took 2 steps: the full one's remaining steps go at its measured seconds per step
    for stage, steps in (("rwml", 10), ("policy", 5)):
        [step] = stages[stage]["parts"]
        assert step["unit"] == "optimizer step" and step["expected_units"] == steps - 2 and step["per_unit"] > 0
        assert stages[stage]["expected_seconds"] == pytest.approx(
            stages[stage]["seconds"] + (steps - 2) * step["per_unit"]
        )
    # eval already plays its 2 tasks in one wave: the forecast is what it measured
    assert stages["eval"]["expected_seconds"] == stages["eval"]["seconds"]
    assert measured["expected_hours"] <= measured["upper_hours"]
    assert measured["sampling_tokens_per_second"] > 0 and measured["sampling_sequences"] == 2 * 4
    assert measured["embedder_texts_per_second"] > 0
    assert "toy scale on CPU" in result.stdout and "The full recipe:" in result.stdout
    # `train` reads the forecast where selftest writes it by default, and says what is left after each stage
    (tmp_path / "runs/selftest").mkdir(parents=True)
    out.rename(tmp_path / "runs/selftest/recipe.json")
    train = subprocess.run([sys.executable, "-m", "rwml_lite", "train", str(recipe), "stages=[collect,build]"],
                           capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    said = " ".join((train.stdout + train.stderr).split())
    minutes = sum(m["expected_seconds"] for m in measured["stages"]) / 60
    assert f"Forecast from runs/selftest/recipe.json: about {minutes:,.0f} min" in said
    assert "min to go for build (rwml-lite selftest's forecast)" in said


def test_a_selftest_whose_stage_fails_exits_non_zero_naming_the_stage_and_its_fields(tmp_path, tiny_qwen3, java):
    recipe = tiny_recipe(tmp_path, tiny_qwen3, ["collect", "build", "policy"], policy={"start": "base", "num_tasks": 1})
    result = rwml_lite("selftest", str(recipe), "--out", str(tmp_path / "selftest.json"))
    assert result.returncode != 0
    said = " ".join(result.stderr.split())
    assert "the policy stage failed at toy scale" in said and "policy.tasks_per_step=16" in said
    assert "The recipe fields it depends on:" in said and "policy" in said.split("depends on:")[1]
    assert not (tmp_path / "selftest.json").exists()
