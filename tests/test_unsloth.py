"""The unsloth backend through the pinned Unsloth, on its CPU fallback (no vLLM, no GPU here):
collect, the filter's SFT, RWML's GRPO and eval on a tiny Qwen3 loaded once, in 4-bit, with LoRA.

Unsloth patches transformers, TRL and PEFT when it is imported, so each case runs in a fresh
Python process that imports `rwml_lite.models.unsloth` first, as the CLI does.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, require, rwml_lite, tiny_recipe
from rwml_lite.records import read_jsonl

PIPELINE_SCRIPT = """
import json, sys
import rwml_lite.models.unsloth as unsloth_backend
from rwml_lite.config import load_recipe
from rwml_lite.pipeline import run

recipe = load_recipe(sys.argv[1])
run(recipe, recipe.stages)
model, _, _ = next(iter(unsloth_backend._LOADED.values()))
print(json.dumps({"loads": len(unsloth_backend._LOADED), "base_layer": type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__}))
"""


OFFLOAD_SCRIPT = """
import json, sys
import rwml_lite.models.unsloth as unsloth_backend
from unsloth import FastLanguageModel
from rwml_lite.config import load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling

calls, loader = [], FastLanguageModel.from_pretrained
def recorded(*args, **kwargs):
    calls.append({k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))})
    return loader(*args, **kwargs)
FastLanguageModel.from_pretrained = recorded

outcomes = []
for layers in (2, "auto"):
    recipe = load_recipe(sys.argv[1], [f"model.offload_layers={layers}"])
    try:
        generator = unsloth_backend.generator(recipe.model)
        generator.generate([[{"role": "user", "content": "hi"}]], 1, Sampling(max_new_tokens=4))
        outcomes.append(["sampled", getattr(generator.model, "_unsloth_block_swap", None) is not None])
    except RwmlError as e:
        outcomes.append(["refused", str(e)])
print(json.dumps({"calls": calls, "outcomes": outcomes}))
"""


def run_pipeline_on_unsloth(recipe) -> subprocess.CompletedProcess:
    """Every stage of `train` with the unsloth backend, in one process, as the CLI runs them on a GPU
    (the CLI itself refuses the backend without one, see the last test)."""
    require(importlib.util.find_spec("unsloth") is not None, "unsloth is not installed (make test installs it)")
    require(shutil.which("java") is not None, "TextWorldExpress needs Java")
    return subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, str(recipe)], capture_output=True, text=True, cwd=REPO
    )


@pytest.fixture(scope="module")
def unsloth_run(tmp_path_factory, tiny_qwen3):
    folder = tmp_path_factory.mktemp("unsloth")
    recipe = tiny_recipe(
        folder,
        tiny_qwen3,
        ["collect", "build", "filter", "rwml", "policy", "eval"],
        policy={
            "tasks_per_step": 2,
            "group_size": 2,
            "max_steps": 2,
            "episode_max_steps": 3,
            "save_steps": 1,
            "learning_rate": 0.01,
            "invalid_action_penalty": 0.1,
        },  # fmt: skip
        model={
            "backend": "unsloth",
            "fast_inference": False,
            "load_in_4bit": True,
            "max_seq_length": 1024,
            "optimizer": "adamw_8bit",
        },
        reward={"kind": "continuous"},  # a graded reward, so that every group has an advantage to learn from
    )
    result = run_pipeline_on_unsloth(recipe)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run", json.loads(result.stdout.strip().splitlines()[-1]), result


@pytest.mark.slow
def test_unsloth_loads_the_tiny_qwen3_once_in_4bit_and_grpo_changes_only_lora_weights(unsloth_run, tiny_qwen3):
    run, summary, result = unsloth_run
    assert "Unsloth" in result.stdout + result.stderr  # the pinned Unsloth loaded the model, not plain transformers
    assert summary == {"loads": 1, "base_layer": "Linear4bit"}  # one model for every stage, 4-bit NF4 under the LoRA
    adapter = load_file(run / "checkpoints/rwml/adapter/adapter_model.safetensors")
    assert adapter and all("lora_A" in k or "lora_B" in k for k in adapter)
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)  # lora_B starts at zero


@pytest.mark.slow
def test_unsloth_grpo_ran_the_recipe_steps_with_a_varied_reward(unsloth_run):
    logs = [m for m in read_jsonl(unsloth_run[0] / "metrics/rwml.jsonl") if "reward" in m]
    assert [m["step"] for m in logs] == [1, 2]
    assert any(m["reward_std"] > 0 for m in logs)


@pytest.mark.slow
def test_every_stage_ran_and_filter_rwml_and_policy_trained_their_own_adapters(unsloth_run):
    run = unsloth_run[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert {s for s, e in manifest["stages"].items() if e["status"] == "done"} == {
        "collect", "build", "filter", "rwml", "policy", "eval"
    }  # fmt: skip
    filter_adapter, rwml_adapter, policy_adapter = (
        load_file(run / f"checkpoints/{stage}/adapter/adapter_model.safetensors")
        for stage in ("filter", "rwml", "policy")
    )
    assert filter_adapter.keys() == rwml_adapter.keys() == policy_adapter.keys()
    assert any(not torch.equal(filter_adapter[k], rwml_adapter[k]) for k in filter_adapter)
    # the policy stage started from the RWML adapter (policy.start: rwml) and trained it further
    assert any(not torch.equal(rwml_adapter[k], policy_adapter[k]) for k in rwml_adapter)
    assert [m["step"] for m in read_jsonl(run / "metrics/policy.jsonl")] == [1, 2]
    for variant in ("base", "rwml", "policy"):  # eval sampled the base model and the adapters from one loaded model
        assert json.loads((run / f"eval/{variant}.json").read_text())["wm_triplets"] > 0


def test_too_long_prompts_are_refused_naming_max_seq_length(tmp_path, tiny_qwen3):
    recipe = tiny_recipe(
        tmp_path, tiny_qwen3, model={"backend": "unsloth", "fast_inference": False, "max_seq_length": 64}
    )
    result = run_pipeline_on_unsloth(recipe)
    assert result.returncode != 0
    assert "model.max_seq_length=64" in result.stderr and "Raise model.max_seq_length to at least" in result.stderr


def test_unsloth_backend_without_a_gpu_is_refused_with_the_hf_alternative(tmp_path, tiny_qwen3):
    require(not torch.cuda.is_available(), "this machine has a GPU")
    result = rwml_lite("train", str(tiny_recipe(tmp_path, tiny_qwen3, model={"backend": "unsloth"})))
    assert result.returncode == 2
    assert "needs an NVIDIA GPU" in result.stderr and "model.backend=hf" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "rollouts.jsonl").exists()  # refused before any stage ran


@pytest.mark.slow
def test_the_configs_the_trainers_resolved_are_kept_with_the_recipes_objective(unsloth_run):
    run = unsloth_run[0]
    grpo = json.loads((run / "checkpoints/rwml/trainer_config.json").read_text())
    sft = json.loads((run / "checkpoints/filter/trainer_config.json").read_text())
    assert {k: grpo[k] for k in ("weight_decay", "warmup_steps", "mask_truncated_completions", "epsilon", "epsilon_high", "seed")} == {
        "weight_decay": 0.0, "warmup_steps": 0.0, "mask_truncated_completions": False, "epsilon": 0.2, "epsilon_high": 0.2, "seed": 0
    }  # fmt: skip
    assert grpo["num_generations"] == 4 and grpo["learning_rate"] == 0.01 and grpo["loss_type"] == "dapo"
    assert grpo["gradient_accumulation_steps"] == 2  # 2 prompts x 4 completions in micro batches of 4
    assert {k: sft[k] for k in ("weight_decay", "warmup_steps", "gradient_accumulation_steps", "per_device_train_batch_size")} == {
        "weight_decay": 0.0, "warmup_steps": 0.0, "gradient_accumulation_steps": 1, "per_device_train_batch_size": 4
    }  # fmt: skip


def test_offloaded_layers_reach_unsloths_loader_and_a_machine_without_cuda_is_told_which_field(
    tmp_path, tiny_qwen3_moe
):
    """The offloaded MoE path on a tiny Qwen3-MoE: model.offload_layers goes to Unsloth's from_pretrained as
    offload_layers, beside 4-bit weights and no vLLM; on a GPU the model samples with the swap installed.
    Block swap copies over CUDA streams, so without CUDA the load fails, and the user reads which field."""
    recipe = tiny_recipe(
        tmp_path,
        tiny_qwen3_moe,
        model={
            "backend": "unsloth",
            "fast_inference": False,
            "load_in_4bit": True,
            "max_seq_length": 256,
            "gradient_checkpointing": True,  # block swap needs it (the tiny recipe turns it off for CPU speed)
        },
    )
    result = subprocess.run(
        [sys.executable, "-c", OFFLOAD_SCRIPT, str(recipe)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [c["offload_layers"] for c in summary["calls"]] == [2, "auto"]
    for call in summary["calls"]:
        assert (call["model_name"], call["load_in_4bit"], call["fast_inference"]) == (str(tiny_qwen3_moe), True, False)
        assert call["max_seq_length"] == 256
    if torch.cuda.is_available():  # the swap is installed for a count (auto may find room for every layer)
        assert summary["outcomes"][0] == ["sampled", True] and summary["outcomes"][1][0] == "sampled"
    else:  # Unsloth's CPU fallback hands the argument to transformers, which refuses it
        for kind, message in summary["outcomes"]:
            assert kind == "refused"
            assert "model.offload_layers (Unsloth's block swap) cannot run here" in message
            assert "unexpected keyword argument 'offload_layers'" in message.split("Unsloth said:")[1]
