"""Every GPU recipe says where it leaves the paper: a field whose value differs from the paper's (docs/paper.md, the
table below, one place) is set on a line of the recipe (or a recipe it extends) that carries an `[ours]` mark.
A default that differs silently, or an unmarked line, fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO
from rwml_lite.config import load_recipe, marked_lines, recipe_files

#: The paper's values (docs/paper.md: the pipeline, the reward, hyperparameters, data sizes), by benchmark.
PAPER_COMMON = {
    "collect.temperature": 1.0,
    "collect.max_steps": 30,
    "worldmodel.val_fraction": 0.1,
    "worldmodel.filter.samples": 10,
    "worldmodel.filter.keep_easy_p": 0.1,
    "reward.kind": "binary",
    "reward.embedder": "Qwen/Qwen3-Embedding-8B",
    "model.load_in_4bit": False,
    "grpo.epochs": 2.0,
    "grpo.learning_rate": 1e-6,
    "grpo.batch_size": 32,
    "wm_sft.epochs": 2.0,
    "wm_sft.learning_rate": 2e-6,
    "wm_sft.batch_size": 32,
    "policy.group_size": 8,
    "eval.runs": 3,
    "eval.max_steps": 30,
}
PAPER = {
    "alfworld": {**PAPER_COMMON, "collect.num_tasks": 2048, "collect.rollouts_per_task": 3, "grpo.group_size": 8,
                 "reward.tau_d": 0.2, "worldmodel.filter.tau_d": 0.1, "policy.max_steps": 300,
                 "policy.episode_max_steps": 15},
    "tau2": {**PAPER_COMMON, "collect.rollouts_per_task": 6, "grpo.group_size": 16, "reward.tau_d": 0.4,
             "worldmodel.filter.tau_d": 0.15, "policy.max_steps": 200, "policy.episode_max_steps": 30},
}  # fmt: skip
GPU_RECIPES = sorted(p for p in (REPO / "recipes").glob("*.yaml") if "demo" not in p.name)


def _line_setting(path: Path, field: str) -> str | None:
    """The line of `path` that sets the dotted `field` (a key inside its section's indented block), if any."""
    *sections, key = field.split(".")
    depth, wanted = 0, sections
    for line in path.read_text().splitlines():
        indent = len(line) - len(line.lstrip())
        match = re.match(r"\s*([A-Za-z_0-9]+):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        if indent // 2 < depth:  # left the block
            depth = indent // 2
        if depth < len(wanted) and indent // 2 == depth and match.group(1) == wanted[depth]:
            depth += 1
        elif depth == len(wanted) and indent // 2 == depth and match.group(1) == key:
            return line
    return None


def _value(recipe, field: str):
    value = recipe
    for part in field.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("path", GPU_RECIPES, ids=lambda p: p.stem)
def test_a_field_that_differs_from_the_paper_is_marked_on_its_line(path):
    recipe = load_recipe(path)
    unmarked = []
    for field, paper in PAPER[recipe.env.name].items():
        value = _value(recipe, field)
        if value == paper:
            continue
        line = next((found for p in recipe_files(path) if (found := _line_setting(p, field))), None)
        if line is None or "[ours" not in line:
            unmarked.append(
                f"{field}: {value!r} (the paper: {paper!r}) " + (f"on `{line.strip()}`" if line else "by default")
            )
    assert not unmarked, f"{path.name} differs from the paper without an [ours] mark: " + "; ".join(unmarked)


def test_the_marks_test_finds_a_field_in_its_section_and_not_elsewhere():
    recipe = REPO / "recipes/alfworld_qwen2.5_7b.yaml"
    assert "learning_rate: 1.0e-5" in _line_setting(recipe, "grpo.learning_rate")
    assert _line_setting(recipe, "worldmodel.filter.tau_d").strip().startswith("tau_d:")
    assert _line_setting(recipe, "grpo.no_such_field") is None


def test_the_study_lists_the_recipes_marked_lines_farthest_file_first():
    lines = marked_lines(REPO / "recipes/study_alfworld_qwen2.5_7b.yaml")
    assert lines[0].startswith("alfworld_qwen2.5_7b.yaml: ") and all("[ours" in x or "[demo]" in x for x in lines)
    assert any("load_in_4bit: true" in x and "[ours]" in x for x in lines)
