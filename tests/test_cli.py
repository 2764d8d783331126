"""The small commands: listing and showing recipes, doctor, and friendly errors."""

from __future__ import annotations

from conftest import rwml_lite


def test_recipes_lists_the_shipped_recipes_with_their_hardware():
    result = rwml_lite("recipes")
    assert result.returncode == 0
    assert "demo_cpu" in result.stdout and "2 CPU cores" in result.stdout


def test_recipes_show_prints_every_field_with_its_description():
    result = rwml_lite("recipes", "show", "demo_cpu", "grpo.max_steps=3")
    assert result.returncode == 0
    assert "grpo.max_steps" in result.stdout and "optimizer steps" in result.stdout
    assert "reward.tau_d" in result.stdout


def test_doctor_reports_each_check():
    result = rwml_lite("doctor")
    assert result.returncode == 0
    for check in ("Python", "torch", "trl", "Java", "GPU", "ALFWORLD_DATA"):
        assert check in result.stdout


def test_a_bad_recipe_value_is_one_paragraph_without_traceback():
    result = rwml_lite("train", "demo_cpu", "grpo.loss_type=ppo")
    assert result.returncode == 2
    assert "grpo.loss_type" in result.stderr and "'dapo'" in result.stderr
    assert "Traceback" not in result.stderr
