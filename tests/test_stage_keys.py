"""Stage keys: a stage is reused only when nothing that can change its result changed.

Every recipe field is either read by some stage (its key and the keys of every later stage move
when it changes) or declared result-neutral; a new field that is neither fails here, so it cannot
silently reuse stale artifacts.
"""

from __future__ import annotations

import pytest

from conftest import REPO
from rwml_lite.config import describe_fields, load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.pipeline import RESULT_NEUTRAL, depends_on, stage_keys
from rwml_lite.stages import STAGES

RECIPE = REPO / "recipes/alfworld_qwen3_8b.yaml"  # both thresholds auto: the filter stage measures them


def first_reader(field: str, recipe=None) -> str | None:
    """The first stage whose key reads `field` (a listed field or a section above it; result-neutral fields are
    left out of every key)."""
    if field in RESULT_NEUTRAL:
        return None
    recipe = recipe or load_recipe(RECIPE)
    for stage in STAGES:
        if any(field == read or field.startswith(read + ".") for read in depends_on(recipe, stage)):
            return stage
    return None


def changed(value):
    """Another valid value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value / 2, 6) if value else 0.01
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value[:-1] if len(value) > 1 else value + value
    return None


def test_every_field_is_read_by_a_stage_or_declared_result_neutral():
    fields = [key for key, _, _ in describe_fields(load_recipe(RECIPE))]
    unclaimed = [f for f in fields if first_reader(f) is None and f not in RESULT_NEUTRAL]
    assert unclaimed == []


@pytest.mark.parametrize(
    ("field", "value", "first"),
    [
        ("model.load_in_4bit", False, "collect"),  # other weights sample other episodes, filter and eval too
        ("model.fast_inference", False, "collect"),
        ("model.generation_batch_size", 8, "collect"),
        ("reward.precision", "4bit", "filter"),  # a quantized embedder judges the filter's hits
        ("model.optimizer", "adamw_torch", "filter"),
        ("worldmodel.filter.weight_decay", 0.1, "filter"),
        ("grpo.mask_truncated_completions", True, "rwml"),
        ("grpo.max_completion_length", 512, "filter"),  # reward.tau_d: auto is measured as GRPO samples
        ("reward.auto_hit_rate", "[0.1,0.3]", "filter"),
        ("eval.runs", 5, "eval"),
    ],
)
def test_a_changed_field_rekeys_its_first_reader_and_every_later_stage(field, value, first):
    before = stage_keys(load_recipe(RECIPE))
    after = stage_keys(load_recipe(RECIPE, [f"{field}={value}"]))
    moved = [s for s in STAGES if before[s] != after[s]]
    assert moved == STAGES[STAGES.index(first) :]


def test_every_keyed_field_rekeys_exactly_from_its_first_reader():
    recipe = load_recipe(RECIPE)
    before = stage_keys(recipe)
    tried = 0
    for field, value, _ in describe_fields(recipe):
        first = first_reader(field, recipe)
        new = changed(value)
        if first is None or new is None or field in ("env.name", "model.backend"):
            continue  # env.name and backend swap whole sections and are covered above
        try:
            other = load_recipe(RECIPE, [f"{field}={new!r}" if isinstance(new, str) else f"{field}={new}"])
        except RwmlError:  # a value the schema refuses (an unknown split, a path): nothing to key
            continue
        moved = [s for s, k in stage_keys(other).items() if k != before[s]]
        assert moved == STAGES[STAGES.index(first) :], field
        tried += 1
    assert tried > 60


def test_result_neutral_fields_rekey_nothing():
    before = stage_keys(load_recipe(RECIPE))
    for override in [
        "run.dir=runs/elsewhere",
        "run.report_to=none",
        "model.gpu_memory_utilization=0.5",
        "model.gradient_checkpointing=false",
        "grpo.min_signal_share=0.5",  # when the signal warning is given, not what RWML trains
        "grpo.signal_window=3",
    ]:
        assert stage_keys(load_recipe(RECIPE, [override])) == before, override


def test_a_fixed_reward_threshold_keys_training_and_evaluation_only():
    """With reward.tau_d a number, the filter neither reads it nor samples as GRPO does: changing them redoes
    no filter (its SFT and K predictions are the expensive part on a GPU)."""
    fixed = ["reward.tau_d=0.3", "worldmodel.filter.tau_d=0.1"]
    before = stage_keys(load_recipe(RECIPE, fixed))
    for change in ("reward.tau_d=0.25", "grpo.max_completion_length=512", "reward.auto_hit_rate=[0.1,0.3]"):
        after = stage_keys(load_recipe(RECIPE, [*fixed, change]))
        assert [s for s in STAGES if before[s] != after[s]] == ["rwml", "wm_sft", "policy", "eval"], change


#: The keys of three shipped recipes as rwml-lite computed them before the stages moved into rwml_lite/stages/
#: (commit ea3af3c). A run folder made then is skipped or resumed now only if these still hold: a change here
#: makes every user's finished stage refuse (or rerun under --redo), so it must be deliberate, and this table
#: is then updated with it.
RECORDED_KEYS = {
    "demo_cpu": ["273934d8504e838a", "cda076754593ef07", "e4890652c0449a9e", "eee8d4c0ac559a8c",
                 "2dd89c99c0169586", "57587888b4d905ae", "8a8b53a74dff36a4"],
    "alfworld_qwen3_8b": ["eff11c675cab1316", "a559769355a2962d", "bbb3612ef711e73b", "87e725931e37f0b2",
                          "108f7cae5dec775a", "4b84724aa847a3c1", "c2108186b8933b2b"],
    "tau2_qwen3_8b": ["552fdd1c1a6df4ed", "f9b0ded1f86e658f", "38ef83780241f087", "67b6104e06aa9dcc",
                      "54585cebba981237", "082155c73f5daeb3", "37356e7471bd7d38"],
}  # fmt: skip


@pytest.mark.parametrize("name", RECORDED_KEYS)
def test_the_shipped_recipes_keep_the_keys_recorded_before_the_stages_moved(name):
    keys = stage_keys(load_recipe(REPO / f"recipes/{name}.yaml"))
    assert list(keys) == STAGES
    assert list(keys.values()) == RECORDED_KEYS[name]


def test_the_recipe_schema_knows_the_stages_in_the_order_the_pipeline_runs_them():
    """config (the bottom layer) validates `stages` against its own list; rwml_lite/stages/ declares the modules."""
    from rwml_lite.config import STAGE_NAMES

    assert list(STAGE_NAMES) == STAGES
