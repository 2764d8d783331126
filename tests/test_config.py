"""Recipes: every shipped one validates; bad ones are refused with the field, value and fix named."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO, rwml_lite
from rwml_lite.cli import shipped_recipes_dir
from rwml_lite.config import Recipe, describe_fields, load_recipe
from rwml_lite.errors import RwmlError

SHIPPED = sorted(shipped_recipes_dir().glob("*.yaml"))


def test_recipes_are_shipped():
    assert [p.stem for p in SHIPPED if p.stem == "demo_cpu"] == ["demo_cpu"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipe_validates_and_opens_with_launch_command_and_hardware(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    header = path.read_text().splitlines()[:2]
    # a study recipe is run by `study`; a training recipe by `train`, or by `study` where it names its variants
    command = "study" if path.stem.startswith("study_") or "\nstudy:" in path.read_text() else "train"
    assert header[1].startswith("# Hardware: ")
    several = re.fullmatch(
        r"# Launch: accelerate launch --multi_gpu --num_processes (\d+) -m rwml_lite (.*)", header[0]
    )
    if several:  # one process per GPU, as many as the hardware line names
        assert f"{several.group(1)} x " in header[1] and several.group(2) == f"{command} recipes/{path.name}"
    else:
        assert header[0] == f"# Launch: rwml-lite {command} recipes/{path.name}"


def test_every_field_has_a_description():
    recipe = load_recipe(shipped_recipes_dir() / "demo_cpu.yaml")
    rows = describe_fields(recipe)
    assert len(rows) > 50
    assert all(description for _, _, description in rows), [key for key, _, d in rows if not d]


def _write(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


MINIMAL = {"model": {"name_or_path": "some/model"}}


def test_unknown_key_is_named_with_the_allowed_keys_and_a_suggestion(tmp_path):
    with pytest.raises(RwmlError) as e:
        load_recipe(_write(tmp_path, {**MINIMAL, "grpo": {"group_sise": 8}}))
    message = str(e.value)
    assert "unknown key `grpo.group_sise`" in message
    assert "Did you mean `grpo.group_size`?" in message
    assert "learning_rate" in message  # the allowed keys are listed


def test_bad_choice_names_the_value_and_the_allowed_values(tmp_path):
    with pytest.raises(RwmlError) as e:
        load_recipe(_write(tmp_path, {**MINIMAL, "grpo": {"loss_type": "ppo"}}))
    message = str(e.value)
    assert "`grpo.loss_type` = 'ppo' is not allowed" in message
    assert "'dapo'" in message and "'grpo'" in message


def test_bad_number_and_missing_model_are_reported_together(tmp_path):
    with pytest.raises(RwmlError) as e:
        load_recipe(_write(tmp_path, {"collect": {"num_tasks": -3}}))
    message = str(e.value)
    assert "2 problem(s)" in message
    assert "`collect.num_tasks` = -3 is invalid" in message
    assert "`model` is required" in message


def test_micro_batch_must_divide_the_step(tmp_path):
    with pytest.raises(RwmlError, match="micro_batch_size=3 must divide batch_size \\* group_size"):
        load_recipe(_write(tmp_path, {**MINIMAL, "grpo": {"batch_size": 4, "group_size": 4, "micro_batch_size": 3}}))


def test_several_samples_need_a_sampling_temperature(tmp_path):
    with pytest.raises(RwmlError, match="worldmodel.filter.*samples > 1 needs temperature > 0"):
        load_recipe(_write(tmp_path, {**MINIMAL, "worldmodel": {"filter": {"samples": 4, "temperature": 0}}}))
    with pytest.raises(RwmlError, match="wm_samples > 1 needs wm_temperature > 0"):
        load_recipe(_write(tmp_path, {**MINIMAL, "eval": {"wm_samples": 2, "wm_temperature": 0}}))


def test_overrides_are_typed_and_validated(tmp_path):
    path = _write(tmp_path, MINIMAL)
    recipe = load_recipe(
        path, ["grpo.learning_rate=5e-6", "collect.num_tasks=4", "run.dir=runs/x", "eval.temperature=0"]
    )
    assert recipe.grpo.learning_rate == 5e-6
    assert recipe.collect.num_tasks == 4
    assert recipe.run.dir == "runs/x"
    with pytest.raises(RwmlError, match="unknown key `grpo.lr`"):
        load_recipe(path, ["grpo.lr=1"])
    with pytest.raises(RwmlError, match="must look like key.sub=value"):
        load_recipe(path, ["grpo.learning_rate"])
    with pytest.raises(RwmlError, match="`model.name_or_path` is a value, not a section"):
        load_recipe(path, ["model.name_or_path.x=1"])


def test_missing_file_and_bad_yaml_are_explained(tmp_path):
    with pytest.raises(RwmlError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(RwmlError, match="not valid YAML"):
        load_recipe(bad)


def test_a_distance_threshold_outside_what_a_cosine_distance_can_be_is_refused():
    for field in ("reward.tau_d", "worldmodel.filter.tau_d"):
        for bad in ("7", "0", "often"):
            with pytest.raises(RwmlError, match=rf"`{field}` = .* is invalid: must be a distance .* between 0 and 2"):
                load_recipe(REPO / "recipes/demo_cpu.yaml", [f"{field}={bad}"])
    auto = load_recipe(REPO / "recipes/demo_cpu.yaml", ["reward.tau_d=auto", "worldmodel.filter.tau_d=auto"])
    assert auto.reward.tau_d == auto.worldmodel.filter.tau_d == "auto"


def test_loose_thresholds_are_accepted_with_a_warning_naming_the_paper_value():
    from rwml_lite.config import recipe_warnings

    assert recipe_warnings(load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml")) == []
    loose = recipe_warnings(
        load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml", ["reward.tau_d=0.7", "worldmodel.filter.tau_d=0.8"])
    )
    assert len(loose) == 3 and "the paper uses 0.2" in loose[0] and "strict threshold is 0.1" in loose[1]
    result = rwml_lite("recipes", "show", "alfworld_qwen3_8b", "reward.tau_d=0.7")
    assert result.returncode == 0 and "warning:" in result.stderr and "reward.tau_d=0.7" in result.stderr


def test_settings_that_would_train_on_nothing_are_refused():
    for override, says in [
        ("grpo.max_steps=0", "max_steps=0 trains nothing"),
        ("grpo.max_steps=-3", "greater than or equal to -1"),
        ("grpo.epsilon_high=0.1", "epsilon_high=0.1 is below epsilon=0.2"),
    ]:
        with pytest.raises(RwmlError, match=says):
            load_recipe(REPO / "recipes/demo_cpu.yaml", [override])


def test_stages_must_be_in_order_and_have_what_they_read():
    for stages, says in [
        ("[collect, build, eval, rwml]", "in pipeline order"),
        ("[collect, build, policy, eval]", r"runs policy \(policy.start=rwml\) but not rwml"),
        ("[collect, build, rwml, eval]", "runs rwml but not filter"),
    ]:
        with pytest.raises(RwmlError, match=says):
            load_recipe(REPO / "recipes/demo_cpu.yaml", [f"stages={stages}"])
    ok = load_recipe(
        REPO / "recipes/demo_cpu.yaml",
        ["stages=[collect, build, policy, eval]", "policy.start=base", "reward.tau_d=0.3"],
    )
    assert ok.evaluated_policies() == ["base", "policy"]
    with pytest.raises(RwmlError, match="`eval.policies` names 'wm_sft'"):
        load_recipe(REPO / "recipes/demo_cpu.yaml", ["eval.policies=[base, wm_sft]"])


def test_choices_need_a_list_of_admissible_actions_and_judges_an_endpoint():
    with pytest.raises(RwmlError, match="'choice' numbers the admissible actions, and tau2 lists none"):
        load_recipe(REPO / "recipes/tau2_demo_cpu.yaml", ["agent.action_parse=choice"])
    with pytest.raises(RwmlError, match="reward.kind='judge_binary' needs reward.judge_endpoint"):
        load_recipe(REPO / "recipes/demo_cpu.yaml", ["reward.kind=judge_binary"])
    with pytest.raises(RwmlError, match="rwml_judge_binary, which need reward.judge_endpoint"):
        load_recipe(REPO / "recipes/demo_cpu.yaml", ["study.variants=[rwml, rwml_judge_binary]"])
    with pytest.raises(RwmlError, match="`policy.split` = 'valid_seen' is not a split of textworld_express"):
        load_recipe(REPO / "recipes/demo_cpu.yaml", ["policy.split=valid_seen"])


def test_a_recipe_extends_another_changing_only_what_it_sets(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**MINIMAL, "grpo": {"group_size": 4, "batch_size": 2}}))
    child = _write(tmp_path, {"extends": "base.yaml", "grpo": {"batch_size": 8}, "stages": ["collect", "build"]})
    recipe = load_recipe(child)
    assert (recipe.grpo.group_size, recipe.grpo.batch_size, recipe.stages) == (4, 8, ["collect", "build"])
    assert recipe.model.name_or_path == "some/model"
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"extends": "r.yaml"}))
    with pytest.raises(RwmlError, match="leads back to itself"):
        load_recipe(child)


def test_offloading_takes_a_layer_count_or_auto_and_only_where_unsloth_can_swap():
    moe = REPO / "recipes/alfworld_qwen3_30b_a3b_24gb.yaml"
    assert load_recipe(moe).model.offload_layers == 8
    assert load_recipe(moe, ["model.offload_layers=auto"]).model.offload_layers == "auto"
    assert load_recipe(moe, ["model.offload_layers=0"]).model.offload_layers == 0
    for value in ("-1", "some", "true"):
        with pytest.raises(
            RwmlError, match=r"`model.offload_layers` = .* must be a number of layers \(0 or more\), 'auto'"
        ):
            load_recipe(moe, [f"model.offload_layers={value}"])
    for overrides, says in [
        (["model.fast_inference=true"], "model.offload_layers=8 cannot run with model.fast_inference=true.*Set model.fast_inference=false"),
        (["model.gradient_checkpointing=false"], "model.offload_layers=8 needs model.gradient_checkpointing=true"),
        (["model.backend=hf"], "model.offload_layers=8 is Unsloth's block swap, and model.backend is 'hf': set model.backend=unsloth"),
    ]:  # fmt: skip
        with pytest.raises(RwmlError, match=says):
            load_recipe(moe, overrides)
    assert load_recipe(moe, ["model.offload_layers=0", "model.fast_inference=true"]).model.fast_inference  # 0 = off


def test_the_files_a_recipe_extends_are_listed_without_parsing_them_again(tmp_path):
    from rwml_lite.config import recipe_files
    from rwml_lite.config.loader import _yaml

    (tmp_path / "base.yaml").write_text(yaml.safe_dump({**MINIMAL, "seed": 3}))
    child = _write(tmp_path, {"extends": "base.yaml", "seed": 4})
    assert load_recipe(child).seed == 4
    parsed = _yaml.cache_info().misses
    assert recipe_files(child) == [child, tmp_path / "base.yaml"]
    assert _yaml.cache_info().misses == parsed  # read by load_recipe, listed from that parse
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"extends": "r.yaml"}))
    with pytest.raises(RwmlError, match="leads back to itself"):  # a loop is refused here too, not followed forever
        recipe_files(child)
