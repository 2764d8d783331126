"""`rwml-lite plan`: the VRAM estimate, its arithmetic, and what it says about the shipped recipes."""

from __future__ import annotations

import math
import re

import pytest

from conftest import REPO, TINY_MOE, rwml_lite, tiny_recipe
from rwml_lite.config import load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.plan import ANCHORS, GIB, KNOWN, architecture, estimate, refusal

QWEN3_8B_RECIPE = REPO / "recipes/alfworld_qwen3_8b.yaml"

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
def test_every_gpu_recipe_fits_the_gpu_its_header_names_with_every_stage(path):
    """Every stage, WM SFT and Policy RL included (before the policy stage took log-probs in the logits' dtype,
    alfworld_qwen3_8b's Policy RL phase came to 28.0 GiB on its 24 GB card)."""
    hardware = path.read_text().splitlines()[1]
    gpu_gb = float(re.search(r"(\d+) GB GPU", hardware).group(1))
    gpus = re.search(r"(\d+) x \d+ GB GPU", hardware)
    processes = int(gpus.group(1)) if gpus else 1
    recipe = load_recipe(path, ["stages=[collect,build,filter,rwml,wm_sft,policy,eval]"])
    plan = estimate(recipe, gpu_gb, processes)
    assert plan.fits, refusal(plan)
    if recipe.model.fast_inference:  # a whole GRPO group in vLLM's KV cache at once
        assert plan.kv_sequences is not None and plan.kv_sequences >= recipe.grpo.group_size
    else:  # transformers' generate: the KV cache of a process's share of a GRPO step (TRL samples it in one call)
        kv = KNOWN[recipe.model.name_or_path].kv_bytes_per_token * recipe.model.max_seq_length
        share = recipe.grpo.batch_size * recipe.grpo.group_size // processes
        assert plan.parts["KV cache"] * GIB >= share * kv


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
        trained = "LoRA + optimizer" if load_recipe(path).model.lora else "gradients + optimizer"  # full fine-tuning
        assert "weights" in result.stdout and trained in result.stdout and "Peak" in result.stdout
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
    # bf16 logits, their temperature-scaled copy, log-softmax's saved output: 3 x 2 bytes (16 with float32 copies)
    expected = (activations + tokens * arch.vocab * 3 * 2) / 1024**3
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


def _tiny_moe_plan(tmp_path, model_dir, offload_layers: int, load_in_4bit: bool = False):
    """The tiny Qwen3-MoE (bf16 unless asked) on the offloaded path, 8 sequences per generate call, GRPO 2 x 4
    in 2 micro batches."""
    model = {"backend": "unsloth", "fast_inference": False, "load_in_4bit": load_in_4bit, "dtype": "bfloat16",
             "gradient_checkpointing": True, "offload_layers": offload_layers, "generation_batch_size": 8}  # fmt: skip
    stages = ["collect", "build", "filter", "rwml", "eval"]
    grpo = {"batch_size": 2, "group_size": 4, "micro_batch_size": 4}
    recipe = load_recipe(tiny_recipe(tmp_path, model_dir, stages, model=model, grpo=grpo))
    return recipe, estimate(recipe, 24)


def test_a_tiny_moe_layer_counted_by_hand_matches_the_model_and_offloading_moves_it_to_cpu_ram(
    tmp_path, tiny_qwen3_moe
):
    from transformers import AutoModelForCausalLM

    h, e, i, heads, kv, d = (
        TINY_MOE[k] for k in ("hidden", "experts", "expert_intermediate", "heads", "kv_heads", "head_dim")
    )
    by_hand = h * heads * d * 2 + h * kv * d * 2 + e * 3 * h * i + h * e  # q, o; k, v; experts (gate, up, down); router
    assert by_hand == 61952
    layer = AutoModelForCausalLM.from_pretrained(tiny_qwen3_moe).model.layers[0]
    assert (
        architecture(str(tiny_qwen3_moe)).layer_params
        == by_hand
        == sum(p.numel() for n, p in layer.named_parameters() if "norm" not in n)
    )
    layer_bytes = 2 * by_hand  # bf16
    embeddings = architecture(str(tiny_qwen3_moe)).embedding_params * 2
    gpu = {n: _tiny_moe_plan(tmp_path, tiny_qwen3_moe, n)[1] for n in (0, 2, 4)}
    assert gpu[0].parts["weights"] * GIB == 4 * layer_bytes + embeddings
    # Unsloth's swap keeps 3 layer slots on the GPU: offloading 2 of 4 layers saves nothing, 4 saves one layer
    assert gpu[2].parts["weights"] * GIB == (2 + 2) * layer_bytes + embeddings
    assert gpu[4].parts["weights"] * GIB == (0 + 3) * layer_bytes + embeddings
    assert gpu[4].parts["CPU: offloaded layers (pinned)"] * GIB == 4 * layer_bytes
    assert "CPU: offloaded layers (pinned)" not in gpu[0].parts
    assert gpu[4].host_gib("RWML GRPO") > gpu[0].host_gib("RWML GRPO") > 0


def test_pcie_bytes_and_tokens_per_second_of_the_offloaded_tiny_moe_worked_by_hand(tmp_path, tiny_qwen3_moe):
    from rwml_lite.plan import bandwidth, work

    recipe, plan = _tiny_moe_plan(tmp_path, tiny_qwen3_moe, 2)
    per_pass = 2 * 61952 * 2  # 2 offloaded layers of 61,952 bf16 parameters: 247,808 bytes per forward pass
    b = bandwidth(recipe, plan, pcie_gbs=1.0, gpu_gbs=1e9)  # PCIe at 1 GB/s, GPU memory out of the way
    assert b.offloaded_bytes == per_pass == 247_808
    assert b.pcie_bytes_per_token(8) == per_pass / 8 == 30_976
    assert b.tokens_per_second(8) == pytest.approx(8 / (per_pass / 1e9)) == pytest.approx(32_283.0, abs=0.1)
    assert b.pcie_bound(8)
    # Unsloth spreads 2 of 4 layers as layers 1 and 3; backward re-fetches none: the swap keeps the last two
    assert b.copies_per_micro_batch() == 2 and b.training_pcie_bytes(2) == 2 * per_pass
    all_four = bandwidth(*_tiny_moe_plan(tmp_path, tiny_qwen3_moe, 4), pcie_gbs=1.0)
    assert all_four.copies_per_micro_batch() == 4 + 2  # forward all 4, backward all but the last two
    generation, training = work(recipe, plan)
    assert {job.stage: job.sequences for job in generation}["RWML GRPO"] == 2 * 4  # TRL samples a step at once
    assert {job.stage: job.micro_batches for job in training}["RWML GRPO"] == 2
    twice_as_fast = bandwidth(recipe, plan, pcie_gbs=2.0, gpu_gbs=1e9)
    assert twice_as_fast.tokens_per_second(8) == pytest.approx(2 * b.tokens_per_second(8))
    assert not bandwidth(recipe, plan, pcie_gbs=1.0, gpu_gbs=1e-3).pcie_bound(8)  # a slow GPU memory binds instead


def test_gpu_memory_bytes_of_a_decode_step_worked_by_hand(tmp_path, tiny_qwen3_moe):
    from rwml_lite.plan import BYTES, bandwidth

    recipe, plan = _tiny_moe_plan(tmp_path, tiny_qwen3_moe, 2)
    b = bandwidth(recipe, plan)
    vocab = architecture(str(tiny_qwen3_moe)).vocab
    kv_per_token = 2 * 4 * (2 * 16) * 2  # K and V, 4 layers, 2 heads of 16, bf16
    kv = 2 * (recipe.model.max_seq_length // 2) * kv_per_token  # 2 sequences half way through
    routed = 8 * (1 - (1 - 2 / 8) ** 2)  # experts that 2 tokens x 2 routes pick, uniform routing: 3.5 of 8
    layer = (12288 + 64 * 8) * 2 + routed * 6144 * 2  # attention + router, the routed experts, bf16
    assert b.memory_bytes_per_step(2) == pytest.approx(2 * layer + vocab * 64 * 2 + kv)  # 2 resident layers + head
    # in 4-bit, Unsloth routes at most one (token, expert) slot per expert: 4 tokens x 2 = 8 slots fit the 8
    # experts, 5 x 2 do not, and the step dequantizes each resident layer's whole stack (read NF4, write and read bf16)
    quantized, qplan = _tiny_moe_plan(tmp_path, tiny_qwen3_moe, 0, load_in_4bit=True)
    q = bandwidth(quantized, qplan)
    assert not q.dequantizes_whole_stacks(4) and q.dequantizes_whole_stacks(5)
    kv5 = 5 * (quantized.model.max_seq_length // 2) * kv_per_token
    whole = 4 * ((12288 + 512) * BYTES["4bit"] + 8 * 6144 * (BYTES["4bit"] + 2 + 2))
    assert q.memory_bytes_per_step(5) == pytest.approx(whole + vocab * 64 * 2 + kv5)


@pytest.mark.parametrize("size", [24, 48])
def test_the_consumer_moe_recipes_fit_their_gpu_and_their_header_states_the_cpu_ram_the_plan_counts(size):
    from rwml_lite.plan import bandwidth, estimates, total_hours

    path = REPO / f"recipes/alfworld_qwen3_30b_a3b_{size}gb.yaml"
    recipe = load_recipe(path)
    plan = estimate(recipe, size)
    assert plan.fits, refusal(plan)
    stated_ram = float(re.search(r"(\d+) GB of CPU RAM", path.read_text().splitlines()[1]).group(1))
    assert max(plan.host_gib(phase) for phase in plan.phases) * GIB / 1e9 <= stated_ram
    b = bandwidth(recipe, plan)
    assert total_hours(b) / 24 < 10  # sized for days, not months (at the default PCIe 4.0 and an RTX 3090's memory)
    sampled, _, _ = estimates(b)
    assert all(x.sequences <= 128 // 8 for x in sampled)  # Unsloth's routed 4-bit kernel: 128 experts, 8 per token
    if size == 24:  # 8 layers offloaded: PCIe sets the pace of every stage's sampling
        assert plan.offloaded_layers == 8 and plan.parts["CPU: offloaded layers (pinned)"] > 2
        assert {x.bound for x in sampled} == {"PCIe"}
    else:
        assert plan.offloaded_layers == 0 and {x.bound for x in sampled} == {"GPU memory"}


def test_auto_offloading_is_planned_as_the_fewest_layers_that_fit():
    recipe = load_recipe(REPO / "recipes/alfworld_qwen3_30b_a3b_24gb.yaml", ["model.offload_layers=auto"])
    plan = estimate(recipe, 20)
    n = plan.offloaded_layers
    assert plan.fits and n > 0 and "this plan assumes" in plan.notes[-1]
    fewer = load_recipe(REPO / "recipes/alfworld_qwen3_30b_a3b_24gb.yaml", [f"model.offload_layers={n - 1}"])
    assert not estimate(fewer, 20).fits
    hopeless = estimate(recipe, 10)  # even all 48 layers in CPU RAM leave too little for the KV cache
    assert not hopeless.fits and "all of them, and the recipe still does not fit" in hopeless.notes[-1]
    assert "KV cache" in refusal(hopeless) and "CPU:" not in refusal(hopeless)  # the GPU's parts, not CPU RAM's
    with pytest.raises(RwmlError, match="model.offload_layers=60 but Qwen/Qwen3-30B-A3B-Instruct-2507 has 48"):
        estimate(load_recipe(REPO / "recipes/alfworld_qwen3_30b_a3b_24gb.yaml", ["model.offload_layers=60"]), 24)


def test_plan_prints_cpu_ram_and_the_time_at_the_pcie_rate_asked_for():
    result = rwml_lite("plan", str(REPO / "recipes/alfworld_qwen3_30b_a3b_24gb.yaml"), "--pcie-gbs", "12.5")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "total CPU RAM" in result.stdout and "CPU: offloaded layers (pinned)" in result.stdout
    assert "Sampling at PCIe 12.5 GB/s" in result.stdout and "Training's PCIe copies" in result.stdout
    assert " days; " in " ".join(result.stdout.split())


def test_short_cpu_ram_is_warned_of_with_what_unsloth_keeps_free_before_pinning():
    from rwml_lite.plan import host_ram_warning

    plan = estimate(load_recipe(REPO / "recipes/alfworld_qwen3_30b_a3b_24gb.yaml"), 24)
    largest = max(plan.host_gib(phase) for phase in plan.phases)  # 10.6 GiB, the RWML GRPO phase
    reserve = max(4.0, 0.15 * 32)  # Unsloth pins offloaded layers only while this much of 32 GiB stays free
    assert host_ram_warning(plan, available_gib=largest + reserve + 0.1, total_gib=32) is None
    warning = host_ram_warning(plan, available_gib=largest + reserve - 0.1, total_gib=32)
    assert warning.startswith("CPU RAM: the plan's RWML GRPO phase holds about 10.6 GiB")
    assert "plus 4.8 GiB Unsloth keeps free" in warning and "lower model.offload_layers" in warning


def test_full_fine_tuning_counts_gradients_and_adam_per_weight_and_a_reference_copy_under_kl():
    path = REPO / "recipes/alfworld_qwen2.5_7b_8gpu.yaml"  # float32 weights, 8-bit AdamW
    params = KNOWN["Qwen/Qwen2.5-7B-Instruct"].params
    plan = estimate(load_recipe(path), 180, processes=8)
    assert plan.parts["weights"] == pytest.approx(params * 4 / GIB)
    assert plan.parts["gradients + optimizer"] == pytest.approx(params * (4 + 2) / GIB)  # float32 grads, 2 state bytes
    adamw = estimate(load_recipe(path, ["model.optimizer=adamw_torch"]), 180, 8)
    assert adamw.parts["gradients + optimizer"] == pytest.approx(params * (4 + 2 * 4) / GIB)  # 2 float32 states
    bf16 = estimate(load_recipe(path, ["model.dtype=bfloat16", "model.optimizer=adamw_torch"]), 180, 8)
    assert bf16.parts["gradients + optimizer"] == pytest.approx(params * (2 + 2 * 2) / GIB)  # states in bf16 too
    assert "reference model (GRPO beta > 0)" not in plan.parts  # beta 0: no reference model
    kl = estimate(load_recipe(path, ["grpo.beta=0.01"]), 180, 8)
    assert kl.parts["reference model (GRPO beta > 0)"] == kl.parts["weights"]
    assert "reference model (GRPO beta > 0)" in kl.phases["RWML GRPO"]


def test_several_processes_each_hold_the_model_and_a_share_of_each_batch():
    path = REPO / "recipes/alfworld_qwen2.5_7b_8gpu.yaml"
    eight = estimate(load_recipe(path), 180, processes=8)
    one_of_eight = estimate(load_recipe(path, ["worldmodel.filter.batch_size=1", "grpo.batch_size=4"]), 180, 1)
    for part in ("weights", "gradients + optimizer", "filter SFT activations + logits", "KV cache"):
        assert eight.parts[part] == pytest.approx(one_of_eight.parts[part]), part
    kv = KNOWN["Qwen/Qwen2.5-7B-Instruct"].kv_bytes_per_token * 2048
    assert eight.parts["KV cache"] == pytest.approx(32 * kv * 2 / GIB)  # 256 / 8 sequences, float32 cache
    # DDP's gradient buckets, a second float32 gradient, in the TRL trainers' phases; not in one process
    params = KNOWN["Qwen/Qwen2.5-7B-Instruct"].params
    assert eight.parts["DDP gradient buckets"] == pytest.approx(params * 4 / GIB)
    assert "DDP gradient buckets" in eight.phases["RWML GRPO"] and "DDP gradient buckets" not in one_of_eight.parts
    policy = estimate(load_recipe(path, ["stages=[collect,build,filter,rwml,policy,eval]"]), 180, 8)
    assert "DDP gradient buckets" not in policy.phases["Policy RL"]  # the policy loop sums .grad itself
    result = rwml_lite("plan", str(path))  # the header's 8 x 139 GB
    assert "each of 8 GPUs" in result.stdout and "fits a 139 GB GPU" in result.stdout


def test_a_grpo_steps_flops_on_the_qwen3_8b_recipe_are_counted_by_hand():
    """Qwen3-8B (36 layers, hidden 4096, MLP 12288, 32 query heads and 8 KV heads of 128, vocab 151936), LoRA on
    every layer, gradient checkpointing, vLLM sampling with its importance-sampling correction."""
    from rwml_lite.plan import bandwidth, estimates, volumes

    recipe = load_recipe(QWEN3_8B_RECIPE)
    attention = 2 * 4096 * 4096 + 2 * 4096 * 1024  # q, o; k, v
    mlp = 3 * 4096 * 12288
    context = 3072 // 2 + 768  # the expected sequence: a prompt of half max_seq_length, a reply of 768 tokens
    layer = 2 * (attention + mlp) + 4 * 4096 * context / 2  # weights; QK and AV over half the context
    head = 2 * 151936 * 4096
    forward = 36 * layer + head
    trained = (
        forward + (36 * layer + head) + 36 * layer
    )  # forward, backward (frozen weights: input gradients), recompute
    per_token = trained + forward  # and the log-prob pass for vLLM's importance-sampling correction
    step = 32 * 8 * context * per_token  # batch 32 x group 8 sequences
    b = bandwidth(recipe, estimate(recipe, 24), train_tflops=28)
    expected = volumes(recipe)["expected"]
    assert expected.source == "the paper's yield on alfworld" and expected.triplets_per_rollout == pytest.approx(
        3.79, abs=0.01
    )
    [rwml] = [x for x in estimates(b, expected)[2] if x.stage == "RWML GRPO"]
    assert rwml.context == context and rwml.flops_per_step == pytest.approx(step)
    kept = (
        2048 * 3 * (21011 + 2288) / 6144 * 0.9 * 15813 / 21011
    )  # collect's triplets, 90 % train, the paper's kept share
    assert rwml.steps == math.ceil(2 * kept / 32)  # 2 epochs of 32 prompts
    assert rwml.hours == pytest.approx(rwml.steps * step / 28e12 / 3600)


def test_plan_prints_expected_and_upper_hours_with_training_compute():
    result = rwml_lite("plan", str(QWEN3_8B_RECIPE), "--train-tflops", "100")
    assert result.returncode == 0, result.stderr[-2000:]
    said = " ".join(result.stdout.split())
    assert "Training compute at 100 TFLOP/s" in said and "Expected" in said and "upper bound" in said
    assert "the paper's yield on alfworld, 3.79 per rollout, 75 % kept; prompts of 1536 tokens" in said


def test_plan_counts_this_runs_own_prompt_lengths_once_collect_has_run(tmp_path):
    """After build, the expected volume reads the run's triplets: their prompts' and targets' tokens (here at 4
    characters a token: the demo's model is a GGUF file, which has no tokenizer folder) size each training stage's
    sequences: a prompt and the stage's reply."""
    from rwml_lite.plan import volumes, work
    from rwml_lite.records import write_jsonl

    recipe = load_recipe(REPO / "recipes/demo_cpu.yaml", [f"run.dir={tmp_path}", "worldmodel.filter.enabled=true"])
    triplet = {"prompt": [{"role": "system", "content": "s" * 399}, {"role": "user", "content": "u" * 400}],
               "target": "t" * 80}  # fmt: skip
    (tmp_path / "wm").mkdir()
    write_jsonl(tmp_path / "wm" / "train.jsonl", [triplet] * 6)
    write_jsonl(tmp_path / "wm" / "val.jsonl", [triplet] * 2)
    write_jsonl(tmp_path / "rollouts.jsonl", [{}] * 4)
    expected = volumes(recipe)["expected"]
    assert (expected.triplets_per_rollout, expected.prompt_tokens, expected.target_tokens) == (2.0, 200, 20)
    _, training = work(recipe, estimate(recipe, 24), expected)
    contexts = {job.stage: job.context for job in training}
    assert contexts == {"filter SFT": 220, "RWML GRPO": 200 + recipe.grpo.max_completion_length,
                        "Policy RL": 200 + recipe.agent.max_new_tokens}  # fmt: skip


def test_unsloths_engine_decodes_no_more_sequences_than_it_allows_for_its_kv_cache():
    from rwml_lite.plan import bandwidth, estimates

    recipe = load_recipe(REPO / "recipes/alfworld_qwen2.5_7b.yaml")
    plan = estimate(recipe, 24)
    kv_gib = plan.parts["KV cache"]  # 24 x 0.8 minus the 4-bit weights and vLLM's runtime
    assert 12 < kv_gib <= 16 and 2 * plan.kv_sequences > 64  # the cache would hold more than Unsloth's 64
    sampled, _, _ = estimates(bandwidth(recipe, plan))
    assert {x.stage: x.sequences for x in sampled} == {"collect": 64, "filter": 64, "RWML GRPO": 64, "eval": 64}


@pytest.mark.parametrize("standby", [None, "1", "0"])
def test_plan_counts_the_kv_cache_as_freed_while_training_only_where_unsloths_engine_sleeps(monkeypatch, standby):
    """Unsloth's in-process vLLM sleeps while our trainers run unless the user turned standby off; the hf backend
    and a vLLM server have no engine in this process to sleep."""
    from rwml_lite.config import ModelSettings
    from rwml_lite.plan.memory import vllm_sleeps_while_training

    if standby is None:
        monkeypatch.delenv("UNSLOTH_VLLM_STANDBY", raising=False)
    else:
        monkeypatch.setenv("UNSLOTH_VLLM_STANDBY", standby)
    sleeps = {
        (backend, fast): vllm_sleeps_while_training(
            ModelSettings(name_or_path="m", backend=backend, fast_inference=fast)
        )
        for backend in ("hf", "unsloth")
        for fast in (True, False)
    }
    assert sleeps == {("hf", True): False, ("hf", False): False, ("unsloth", False): False,
                      ("unsloth", True): standby != "0"}  # fmt: skip
