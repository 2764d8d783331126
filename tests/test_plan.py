"""`rwml-lite plan`: the VRAM estimate, its arithmetic, and what it says about the shipped recipes."""

from __future__ import annotations

import re

import pytest

from conftest import REPO, rwml_lite
from rwml_lite.config import load_recipe
from rwml_lite.plan import ANCHORS, KNOWN, architecture, estimate, refusal

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
GPU_RECIPES = [p for p in RECIPES if re.search(r"\d+ GB GPU", p.read_text().splitlines()[1])]


def test_parameter_counts_match_the_published_model_sizes():
    published = {
        "Qwen/Qwen3-8B": 8.19,
        "Qwen/Qwen2.5-7B-Instruct": 7.62,
        "Qwen/Qwen3-30B-A3B-Instruct-2507": 30.5,
        "meta-llama/Llama-3.1-8B-Instruct": 8.03,
    }
    for name, billions in published.items():
        assert KNOWN[name].params / 1e9 == pytest.approx(billions, rel=0.01), name


def test_shapes_read_from_a_config_count_the_real_models_parameters(tiny_qwen3):
    from transformers import AutoModelForCausalLM

    from rwml_lite.plan import architecture

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)  # the plan leaves out norms (< 0.1 %)
    assert architecture(str(tiny_qwen3)).params == sum(p.numel() for p in model.parameters()) - norms


def test_qwen3_8b_kv_cache_per_token():
    assert KNOWN["Qwen/Qwen3-8B"].kv_bytes_per_token == 2 * 36 * 8 * 128 * 2  # K and V, bf16


@pytest.mark.parametrize("path", GPU_RECIPES, ids=lambda p: p.stem)
def test_every_gpu_recipe_fits_the_gpu_its_header_names(path):
    gpu_gb = float(re.search(r"(\d+) GB GPU", path.read_text().splitlines()[1]).group(1))
    plan = estimate(load_recipe(path), gpu_gb)
    assert plan.fits, refusal(plan)
    assert (
        plan.kv_sequences is not None and plan.kv_sequences >= load_recipe(path).grpo.group_size
    )  # a whole GRPO group at once


def test_a_recipe_that_cannot_fit_is_refused_naming_the_fields_to_change():
    recipe = load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml", ["model.load_in_4bit=false"])
    plan = estimate(recipe, 24)
    assert not plan.fits
    assert "weights" in refusal(plan) and "model.load_in_4bit=true" in refusal(plan)
    longer = estimate(load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml", ["grpo.micro_batch_size=256"]), 24)
    assert not longer.fits and "grpo.micro_batch_size" in refusal(longer)


def test_plan_prints_a_breakdown_for_every_shipped_recipe():
    for path in RECIPES:
        result = rwml_lite("plan", str(path))
        assert result.returncode == 0, result.stderr[-2000:]
        assert "weights" in result.stdout and "LoRA + optimizer" in result.stdout and "Peak" in result.stdout
        if path in GPU_RECIPES:
            assert "fits a" in result.stdout and "does not fit" not in result.stdout


def test_anchors_print_the_error_of_each_estimate():
    result = rwml_lite("plan", "alfworld_qwen3_8b", "--anchors", env={**__import__("os").environ, "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr[-2000:]
    errors = re.findall(r"([+-]\d+)%", result.stdout)
    assert len(errors) == len(ANCHORS)
    assert all(abs(int(e)) < 50 for e in errors)  # the estimate stays within half of every anchor


def test_the_shapes_of_an_unreachable_model_are_asked_for_by_field(monkeypatch):
    from rwml_lite.errors import RwmlError
    from rwml_lite.plan import architecture

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RwmlError, match="model.name_or_path"):
        architecture("nobody/no-such-model-anywhere")


def test_the_kv_cache_is_counted_in_training_only_when_the_engine_cannot_sleep(monkeypatch):
    recipe = load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml")
    monkeypatch.delenv(
        "UNSLOTH_VLLM_STANDBY", raising=False
    )  # train sets standby for vLLM recipes and sleeps the engine
    asleep = estimate(recipe, 24)
    assert "KV cache" in asleep.phases["generation"]
    assert all("KV cache" not in asleep.phases[p] for p in ("filter SFT", "RWML GRPO"))
    monkeypatch.setenv(
        "UNSLOTH_VLLM_STANDBY", "0"
    )  # the user turned standby off: vLLM holds its reservation throughout
    awake = estimate(recipe, 24)
    assert all("KV cache" in awake.phases[p] for p in ("filter SFT", "RWML GRPO"))
    assert awake.phase_gib("RWML GRPO") == pytest.approx(asleep.phase_gib("RWML GRPO") + asleep.parts["KV cache"])


def test_plan_says_no_with_its_exit_code_and_only_suggests_changes_not_made():
    result = rwml_lite("plan", "alfworld_qwen3_8b", "--gpu-gb", "6", env={**__import__("os").environ, "COLUMNS": "250"})
    assert result.returncode == 1 and "does not fit a 6 GB GPU" in result.stdout
    assert "load_in_4bit" not in result.stdout.split("does not fit")[1]  # the recipe loads in 4-bit already
    assert rwml_lite("plan", "alfworld_qwen3_8b", "--gpu-gb", "24").returncode == 0
    tight = estimate(load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml", ["grpo.micro_batch_size=256"]), 24)
    assert "model.optimizer=adamw_8bit" not in refusal(tight) and "reward.precision=4bit" in tight.remedies["embedder"]


def test_the_phases_are_those_of_the_stages_the_recipe_runs():
    rwml_only = estimate(load_recipe(REPO / "recipes/alfworld_qwen2.5_7b.yaml"), 24)
    assert list(rwml_only.phases) == ["generation", "filter SFT", "RWML GRPO"]
    study = estimate(load_recipe(REPO / "recipes/study_alfworld_qwen2.5_7b.yaml"), 24)
    assert list(study.phases) == ["generation", "filter SFT", "RWML GRPO", "WM SFT", "Policy RL"]
    assert "embedder" not in study.phases["Policy RL"]  # task success needs no embedder


def test_the_policy_phase_counts_log_probs_of_every_reply_token_of_a_micro_batch():
    recipe = load_recipe(REPO / "recipes/study_alfworld_qwen2.5_7b.yaml")
    arch, p = KNOWN["Qwen/Qwen2.5-7B-Instruct"], recipe.policy
    plan = estimate(recipe, 24)
    tokens = p.micro_batch_size * (recipe.agent.max_new_tokens + 1)
    activations = p.micro_batch_size * recipe.model.max_seq_length * arch.activation_bytes_per_token_layer
    expected = (activations + tokens * arch.vocab * 16) / 1024**3  # bf16 logits, fp32 log-probs and gradient
    assert plan.parts["policy activations + logits"] == pytest.approx(expected)
    bigger = estimate(load_recipe(REPO / "recipes/study_alfworld_qwen2.5_7b.yaml", ["policy.micro_batch_size=64"]), 24)
    assert bigger.phase_gib("Policy RL") > plan.phase_gib("Policy RL")


def test_lora_in_the_last_layers_keeps_only_their_activations_and_adapters():
    def parts(last_layers):
        recipe = load_recipe(REPO / "recipes/study_alfworld_qwen2.5_7b.yaml", [f"model.lora.last_layers={last_layers}"])
        return estimate(recipe, 24).parts

    every, top = parts("null"), parts(7)  # Qwen2.5-7B has 28 layers
    assert top["LoRA + optimizer"] == pytest.approx(every["LoRA + optimizer"] / 4)
    # with Unsloth's checkpointing one layer is recomputed at a time whatever the depth; the log-probs stay
    assert top["policy activations + logits"] == pytest.approx(every["policy activations + logits"])
    demo = REPO / "recipes/demo_cpu.yaml"  # no gradient checkpointing: every adapted layer keeps its activations
    grpo = {n: estimate(load_recipe(demo, [f"model.lora.last_layers={n}"]), 24).parts["GRPO activations + logits"]
            for n in ("null", 8)}  # fmt: skip
    recipe = load_recipe(demo)
    arch = architecture(recipe.model.name_or_path)
    per_layer = recipe.grpo.micro_batch_size * recipe.model.max_seq_length * arch.activation_bytes_per_token_layer
    assert grpo["null"] - grpo[8] == pytest.approx(per_layer * (arch.layers - 8) / 1024**3)
