"""The GPU path's rules that a CPU can check: what the gpu extra installs, what is refused before a
load, how every load failure reads, the exact objective each backend hands to TRL, and how the
in-process vLLM engine is slept, woken, seeded and given its adapters.

vLLM's CPU build refuses sleep mode, so the order of sleep, train, wake and sample through a whole
pipeline is checked on a stand-in engine that records what it is asked; the rest (Unsloth's CPU
fallback, TRL, PEFT, the tiny Qwen3, TextWorldExpress) is real, and tests/test_vllm.py runs the same
sampling code against a real `vllm.LLM`.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from conftest import REPO, require, tiny_recipe
from rwml_lite.config import ModelSettings, load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.models import check_gpu_packages, vllm_environment
from rwml_lite.models.load_errors import explain_load_error
from rwml_lite.models.vllm_engine import SLEEP_LEVEL, AdapterRequests, live_lora_path, sleep, wake
from rwml_lite.runfolder import RunFolder

QWEN3_8B = REPO / "recipes/alfworld_qwen3_8b.yaml"


def gpu_settings(**changes) -> ModelSettings:
    return load_recipe(QWEN3_8B).model.model_copy(update=changes)


# ---------------------------------------------------------------- what the gpu extra installs


def test_the_gpu_extra_pins_vllm_inside_trls_range_with_the_bitsandbytes_plugin():
    gpu = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert set(gpu) == {"unsloth==2026.10.9", "unsloth_zoo==2026.10.9", "vllm==0.30.0", "vllm-bnb-plugin==0.0.3"}
    assert "pip install -e '.[gpu]'" in (REPO / "Dockerfile").read_text()


#: What `pip install -e '.[gpu]'` must keep or bring on a Linux x86-64 CUDA machine (Python 3.11).
GPU_STACK = {
    "torch": "2.13.0", "transformers": "5.17.0", "trl": "1.14.0", "peft": "0.21.2", "bitsandbytes": "0.50.2",
    "unsloth": "2026.10.9", "unsloth-zoo": "2026.10.9", "vllm": "0.30.0", "vllm-bnb-plugin": "0.0.3",
}  # fmt: skip


def test_the_gpu_extra_resolves_on_linux_cuda_beside_the_pinned_stack(tmp_path):
    """Every package the GPU path imports comes with the extra, beside the benchmarks' own packages
    (ALFWorld, tau2-bench: the GPU image installs all three), and none moves a pin of ours."""
    uv = Path(sys.executable).with_name("uv")
    require(uv.exists(), "uv is not installed (make test installs it with the dev extra)")
    lock = tmp_path / "gpu.txt"
    result = subprocess.run(
        [str(uv), "pip", "compile", "pyproject.toml", "--extra", "gpu", "--extra", "alfworld", "--extra", "tau2", "--python-version", "3.11",
         "--python-platform", "x86_64-manylinux_2_28", "--no-header", "--quiet", "-o", str(lock)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )  # fmt: skip
    offline = any(sign in result.stderr.lower() for sign in ("failed to fetch", "dns error", "connection", "timed out"))
    require(not offline, f"PyPI is unreachable: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = dict(
        line.split("==") for line in lock.read_text().splitlines() if "==" in line and not line.startswith(" ")
    )
    assert {name: resolved.get(name) for name in GPU_STACK} == GPU_STACK


def test_doctor_names_the_plugin_and_what_needs_it():
    from rwml_lite.doctor import checks

    rows = {what: (ok, detail) for what, ok, detail in checks()}
    require(importlib.util.find_spec("vllm_bnb_plugin") is None, "the plugin is installed here")
    ok, detail = rows["vllm-bnb-plugin"]
    assert ok is None  # optional: only 4-bit vLLM recipes need it
    assert "model.load_in_4bit + model.fast_inference" in detail and "pip install -e '.[gpu]'" in detail


@pytest.fixture
def installed(monkeypatch):
    """Pretend exactly the given packages are importable (vLLM cannot be installed on a CPU machine)."""
    real = importlib.util.find_spec

    def pretend(*names):
        monkeypatch.setattr(
            importlib.util,
            "find_spec",
            lambda name, *a: (
                object() if name in names else real(name, *a) if name not in ("vllm", "vllm_bnb_plugin") else None
            ),
        )

    return pretend


def test_a_4bit_vllm_recipe_without_the_plugin_is_refused_with_the_install_command(installed):
    installed("vllm")
    with pytest.raises(RwmlError) as refused:
        check_gpu_packages(gpu_settings())
    assert "model.load_in_4bit" in str(refused.value) and "pip install vllm-bnb-plugin==0.0.3" in str(refused.value)
    assert "model.fast_inference=false" in str(refused.value)
    check_gpu_packages(gpu_settings(load_in_4bit=False))  # 16-bit weights need no plugin
    check_gpu_packages(gpu_settings(fast_inference=False))  # nor does Unsloth's own sampling
    installed("vllm", "vllm_bnb_plugin")
    check_gpu_packages(gpu_settings())


def test_a_pre_quantized_checkpoint_needs_the_plugin_too(installed):
    installed("vllm")
    with pytest.raises(RwmlError, match="vllm-bnb-plugin"):
        check_gpu_packages(gpu_settings(load_in_4bit=False, name_or_path="unsloth/Qwen3-8B-unsloth-bnb-4bit"))


def test_a_vllm_recipe_without_vllm_is_refused(installed):
    installed()
    with pytest.raises(RwmlError, match=r"model.fast_inference is true but the vllm package is not installed"):
        check_gpu_packages(gpu_settings())


def test_unsloth_standby_is_asked_for_only_by_a_vllm_recipe():
    # standby turns PyTorch's expandable segments off for the whole process (unsloth_zoo/__init__.py)
    assert vllm_environment(gpu_settings(fast_inference=False)) == {}
    assert vllm_environment(gpu_settings()) == {"UNSLOTH_VLLM_STANDBY": "1", "UNSLOTH_VLLM_STANDBY_UTIL_OVERRIDE": "1"}


ORDER_SCRIPT = """
import sys
import rwml_lite.models as models

def probe(settings):
    print("torch imported before prepare_backend:", "torch" in sys.modules)
    raise SystemExit(0)

models.prepare_backend = probe
from rwml_lite.cli import app
app(["train", sys.argv[1]])
"""


def test_the_cli_prepares_the_backend_before_anything_imports_torch():
    # Unsloth's allocator settings (standby turns expandable segments off) only count if set before torch loads
    result = subprocess.run(
        [sys.executable, "-c", ORDER_SCRIPT, str(QWEN3_8B)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch imported before prepare_backend: False" in result.stdout


# ---------------------------------------------------------------- load failures


#: (what the pinned libraries raise at load, the recipe field the error must name, the fix it must give)
LOAD_FAILURES = [
    (RuntimeError("Unsloth: vLLM >= 0.28 moved bitsandbytes out of tree. Install it with `pip install vllm-bnb-plugin` to use load_in_4bit with fast_inference."),
     "model.load_in_4bit", "pip install vllm-bnb-plugin==0.0.3"),
    (ImportError("Unsloth: Please install vLLM before enabling `fast_inference`!\nYou can do this in a terminal via `pip install vllm`"),
     "model.fast_inference", "pip install -e '.[gpu]'"),
    (NotImplementedError("Unsloth (CPU): fast_inference (vLLM) needs a GPU."), "model.fast_inference", "model.fast_inference=false"),
    (RuntimeError("Unsloth: vLLM does not support LoRA ranks of 1024.\nOnly `{possible_max_ranks}` is supported."),
     "model.lora.r", "8, 16, 32, 64, 128, 256, 320, 512"),
    (ValueError("Target modules {'nope_proj'} not found in the base model. Please check the target modules and try again."),
     "model.lora.target_modules", "q_proj, k_proj, v_proj"),
    (NotImplementedError("Unsloth: Fast inference does not support `trust_remote_code` yet."), "model.name_or_path", "model.fast_inference=false"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.55 GiB"),
     "model.gpu_memory_utilization", "rwml-lite plan"),
    (MemoryError(), "model.max_seq_length", "rwml-lite plan"),
    (ValueError("To serve at least one request with the models's max seq len (40960), (5.62 GiB KV cache is needed, which is larger than the available KV cache memory (2.10 GiB)."),
     "model.max_seq_length", "model.gpu_memory_utilization"),
    (NotImplementedError("Unsloth: vLLM does not support automatic RoPE scaling for 65536 > 40960"), "model.max_seq_length", "lower model.max_seq_length"),
    (RuntimeError("Unsloth: Failed to load model. Both AutoConfig and PeftConfig loading failed.\n\nAutoConfig error: 404 Client Error.\n\n"),
     "model.name_or_path", "Hub id"),
    (AssertionError(), "model.fast_inference=True", "model.backend=hf"),
    (RuntimeError("Unsloth: vLLM standby mode cannot start because `expandable_segments:True` is set in PYTORCH_CUDA_ALLOC_CONF.\nThis is a configuration clash, NOT an out of memory error"),
     "model.fast_inference", "UNSLOTH_VLLM_STANDBY=0"),
    (RuntimeError("Unsloth: vLLM could not finish memory profiling because another process sharing this GPU changed its memory. This is a transient race on a shared GPU, NOT an out of memory error."),
     "model.gpu_memory_utilization is not the cause", "GPU to yourself"),
    (RuntimeError("FlashInfer JIT failed: ninja: not found; [Errno 2] No such file or directory: 'nvcc'"),
     "model.fast_inference=false", "install the CUDA toolkit"),
    (AttributeError("property 'tokenizer' of 'Qwen3Processor' object has no setter"), "model.load_in_4bit=True", "model.backend=hf"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "field", "fix"), LOAD_FAILURES, ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None
)
def test_every_load_failure_is_one_paragraph_naming_the_field_and_the_fix(error, field, fix):
    message = str(explain_load_error(error, gpu_settings()))
    assert field in message and fix in message
    assert "\n" not in message and message.startswith("Unsloth could not load `Qwen/Qwen3-8B` (model.name_or_path)")
    assert f"Unsloth said: {type(error).__name__}" in message  # the library's own words stay, on one line


UNSLOTH_PROBE_SCRIPT = """
import json, sys
import torch
import rwml_lite.models.unsloth as unsloth_backend
from peft import get_peft_model_state_dict
from rwml_lite.config import load_recipe
from rwml_lite.errors import RwmlError

settings = load_recipe(sys.argv[1]).model
said = {}
for name, change in [("vllm", {"fast_inference": True}), ("layers", {"lora": settings.lora.model_copy(update={"target_modules": ["nope_proj"]})}),
                     ("folder", {"name_or_path": "/no/such/checkpoint"})]:
    try:
        unsloth_backend._load(settings.model_copy(update=change))
    except RwmlError as e:
        said[name] = str(e)

def lora_after(seed):
    model = unsloth_backend.trainable_policy(settings, seed)[0]
    return {k: v.clone() for k, v in get_peft_model_state_dict(model).items()}

first, again, other = lora_after(0), lora_after(0), lora_after(1)
a_keys = [k for k in first if "lora_A" in k]
lora = {
    "same_seed_same_init": all(torch.equal(first[k], again[k]) for k in first),
    "other_seed_other_A": all(not torch.equal(first[k], other[k]) for k in a_keys),
    "B_starts_at_zero": all(not v.any() for k, v in first.items() if "lora_B" in k),
    "A_count": len(a_keys),
}
print(json.dumps({"said": said, "lora": lora}))
"""


@pytest.fixture(scope="module")
def unsloth_probe(tmp_path_factory, tiny_qwen3):
    """Real load failures and LoRA initialisations of the unsloth backend on Unsloth's CPU fallback."""
    require(importlib.util.find_spec("unsloth") is not None, "unsloth is not installed (make test installs it)")
    recipe = tiny_recipe(
        tmp_path_factory.mktemp("probe"), tiny_qwen3, model={"backend": "unsloth", "fast_inference": False}
    )
    result = subprocess.run(
        [sys.executable, "-c", UNSLOTH_PROBE_SCRIPT, str(recipe)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_real_load_failures_on_unsloths_cpu_fallback_name_their_fields(unsloth_probe):
    said = unsloth_probe["said"]
    assert "model.fast_inference=false" in said["vllm"] and "needs a GPU" in said["vllm"]
    assert "model.lora.target_modules" in said["layers"] and "nope_proj" in said["layers"]
    assert "/no/such/checkpoint" in said["folder"] and "local folder with config.json" in said["folder"]


def test_each_trainer_starts_from_a_lora_initialised_by_the_recipe_seed(unsloth_probe):
    assert unsloth_probe["lora"] == {
        "same_seed_same_init": True,
        "other_seed_other_A": True,
        "B_starts_at_zero": True,
        "A_count": 14,
    }


# ---------------------------------------------------------------- the objective handed to TRL

#: What RWML's GRPO and the filter's SFT train on the Qwen3-8B recipe, whichever backend runs them:
#: TRL's own defaults, not the ones Unsloth's patched configs substitute. (The optimizer is passed as
#: well, but Unsloth's CPU fallback swaps 8-bit AdamW, which needs a GPU, for torch's AdamW.)
GRPO_OBJECTIVE = {
    "learning_rate": 1e-5, "weight_decay": 0.0, "warmup_steps": 0.0, "seed": 0,
    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 32, "num_generations": 8,
    "loss_type": "dapo", "scale_rewards": "group", "beta": 0.0, "epsilon": 0.2, "epsilon_high": 0.2, "mask_truncated_completions": False,
    "vllm_importance_sampling_correction": True, "max_completion_length": 768, "temperature": 1.0,
}  # fmt: skip
SFT_OBJECTIVE = {
    "learning_rate": 1e-4, "weight_decay": 0.0, "warmup_steps": 0.0, "seed": 0,
    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "num_train_epochs": 2.0, "max_length": 3072,
}  # fmt: skip

CONFIG_SCRIPT = """
import json, sys
if sys.argv[2] == "unsloth":
    import rwml_lite.models.unsloth  # noqa: F401  as the CLI does: Unsloth first, patching TRL
from trl import GRPOConfig, SFTConfig
from rwml_lite.config import load_recipe
from rwml_lite.runfolder import RunFolder
from rwml_lite.train.common import checked_config
from rwml_lite.train.grpo import GRPO_FIELDS, grpo_arguments
from rwml_lite.train.sft import sft_arguments, sft_fields

recipe = load_recipe(sys.argv[1], ["model.backend=" + sys.argv[2]])
folder = RunFolder(__import__("pathlib").Path(sys.argv[3]))
grpo = checked_config(GRPOConfig, grpo_arguments(recipe, folder), GRPO_FIELDS)
sft = checked_config(SFTConfig, sft_arguments(recipe, folder), sft_fields())
resolved = lambda config: {k: getattr(v, "value", v) for k, v in vars(config).items()}  # enums as their values
print(json.dumps({"grpo": resolved(grpo), "sft": resolved(sft)}, default=str))
"""


@pytest.mark.parametrize("backend", ["hf", "unsloth"])
def test_both_backends_hand_trl_the_recipes_objective(tmp_path, backend):
    if backend == "unsloth":
        require(importlib.util.find_spec("unsloth") is not None, "unsloth is not installed (make test installs it)")
    result = subprocess.run(
        [sys.executable, "-c", CONFIG_SCRIPT, str(QWEN3_8B), backend, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resolved = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: resolved["grpo"][k] for k in GRPO_OBJECTIVE} == GRPO_OBJECTIVE
    assert {k: resolved["sft"][k] for k in SFT_OBJECTIVE} == SFT_OBJECTIVE


def test_every_argument_whose_default_unsloth_replaces_is_passed_from_the_recipe(tmp_path):
    from rwml_lite.train.common import UNSLOTH_DEFAULTED, UNSLOTH_GRPO_DEFAULTED
    from rwml_lite.train.grpo import grpo_arguments
    from rwml_lite.train.sft import sft_arguments

    recipe, folder = load_recipe(QWEN3_8B, ["model.backend=hf"]), RunFolder(tmp_path)
    assert set(UNSLOTH_DEFAULTED) | set(UNSLOTH_GRPO_DEFAULTED) <= set(grpo_arguments(recipe, folder))
    assert set(UNSLOTH_DEFAULTED) <= set(sft_arguments(recipe, folder))
    clipped = load_recipe(
        QWEN3_8B, ["model.backend=hf", "grpo.epsilon_high=0.28", "grpo.mask_truncated_completions=true"]
    )
    assert (
        grpo_arguments(clipped, folder)["epsilon_high"] == 0.28
        and grpo_arguments(clipped, folder)["mask_truncated_completions"]
    )


def test_dr_grpo_with_std_scaling_is_refused_as_the_recipe_loads():
    with pytest.raises(RwmlError, match=r"loss_type='dr_grpo' is defined without .* set scale_rewards: none"):
        load_recipe(QWEN3_8B, ["grpo.loss_type=dr_grpo"])
    assert load_recipe(QWEN3_8B, ["grpo.loss_type=dr_grpo", "grpo.scale_rewards=none"]).grpo.scale_rewards == "none"


def test_a_config_that_changes_a_recipe_value_is_refused_naming_the_field(tmp_path):
    from dataclasses import dataclass

    from rwml_lite.train.common import checked_config

    @dataclass
    class MasksTruncated:  # what Unsloth's patched config does to dapo when the field is left out
        mask_truncated_completions: bool = False

        def __post_init__(self):
            self.mask_truncated_completions = True

    with pytest.raises(
        RwmlError, match=r"turned grpo.mask_truncated_completions=False into mask_truncated_completions=True"
    ):
        checked_config(
            MasksTruncated,
            {"mask_truncated_completions": False},
            {"mask_truncated_completions": "grpo.mask_truncated_completions"},
        )


# ---------------------------------------------------------------- the engine: sleep, wake, adapters, seeds


class Engine:
    """Stands in for the `vllm.LLM` that Unsloth attaches as `model.vllm_engine`: the calls it gets,
    in order, and the sleep state that vLLM's `llm_engine.is_sleeping()` reports."""

    def __init__(self, sleep_mode: bool = True):
        self.calls: list[tuple] = []
        self.asleep = False
        self.llm_engine = self
        self.vllm_config = type(
            "VllmConfig", (), {"model_config": type("ModelConfig", (), {"enable_sleep_mode": sleep_mode})}
        )

    def is_sleeping(self) -> bool:
        return self.asleep

    def sleep(self, level: int) -> None:
        self.calls.append(("sleep", level))
        self.asleep = True

    def wake_up(self, tags=None) -> None:
        self.calls.append(("wake", tags))
        self.asleep = False


class Model:
    def __init__(self, engine):
        self.vllm_engine = engine


def test_the_engine_sleeps_once_before_training_and_wakes_once_before_sampling():
    engine = Engine()
    sleep(Model(engine))
    sleep(Model(engine))  # a second trainer in a row: already asleep
    wake(Model(engine))
    wake(Model(engine))
    assert engine.calls == [("sleep", SLEEP_LEVEL), ("wake", None)]  # untagged: weights and KV cache together


def test_an_engine_built_without_sleep_mode_and_a_model_without_engine_are_left_alone():
    engine = Engine(sleep_mode=False)  # UNSLOTH_VLLM_STANDBY=0
    sleep(Model(engine))
    wake(Model(engine))
    sleep(object())
    assert engine.calls == []


def test_one_lora_request_per_saved_adapter_until_it_is_saved_again(tmp_path):
    loads = []
    requests = AdapterRequests(lambda path: loads.append(path) or f"request {len(loads)}")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"step 1")
    assert requests.get(adapter) == requests.get(adapter) == "request 1"
    assert requests.get(None) is None  # the base model
    import os

    os.utime(adapter / "adapter_model.safetensors", ns=(0, 10**9))  # saved anew: a new request, the old one is dropped
    assert requests.get(adapter) == "request 2"
    assert loads == [str(adapter.resolve())] * 2 and len(requests.requests) == 1


ENGINE_PIPELINE_SCRIPT = """
import json, os, sys, types
import rwml_lite.models.unsloth as unsloth_backend
from rwml_lite.config import load_recipe
from rwml_lite.pipeline import run
sys.path.insert(0, sys.argv[2])
from test_gpu_path import Engine

standby = os.environ.get("UNSLOTH_VLLM_STANDBY")
recipe = load_recipe(sys.argv[1])
model, tokenizer, _ = unsloth_backend._load(recipe.model)
engine = model.vllm_engine = Engine()
reply = "<think> </think><action>look around</action><next_state>You are in the kitchen.</next_state>"
reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]  # as vLLM returns them

def generate(texts, sampling_params, lora_request, use_tqdm, tokenization_kwargs):
    assert not engine.asleep, "sampled from a sleeping engine"
    assert tokenization_kwargs == {"add_special_tokens": False}  # the rendered chat template holds them
    engine.calls.append(("generate", len(texts), lora_request, "seed" in sampling_params.kwargs))
    done = types.SimpleNamespace(text=reply, token_ids=reply_ids, finish_reason="stop")
    out = types.SimpleNamespace(outputs=[done] * sampling_params.kwargs["n"])
    return [out] * len(texts)

model.fast_generate = generate
loads = []
model.load_lora = lambda path, load_tensors=False: loads.append(path) or f"lora {len(loads)}"
unsloth_backend._LOADED[recipe.model.model_dump_json()] = (model, tokenizer, unsloth_backend.vllm_engine.AdapterRequests(model.load_lora))
import trl.trainer.grpo_trainer, trl.trainer.sft_trainer  # noqa: E401  before the stand-in vllm module exists
sys.modules["vllm"] = types.SimpleNamespace(SamplingParams=lambda **kwargs: types.SimpleNamespace(kwargs=kwargs))

import transformers
train = transformers.Trainer.train
def recorded_train(self, *args, **kwargs):
    engine.calls.append(("train", type(self).__name__, engine.asleep))
    return train(self, *args, **kwargs)
transformers.Trainer.train = recorded_train
import rwml_lite.train.policy as policy_stage
update = policy_stage._update
def recorded_update(*args, **kwargs):
    engine.calls.append(("train", "policy", engine.asleep))
    return update(*args, **kwargs)
policy_stage._update = recorded_update

run(recipe, recipe.stages)
print(json.dumps({"calls": engine.calls, "loads": loads, "standby": standby}))
"""


@pytest.mark.slow
def test_the_pipeline_trains_with_the_engine_asleep_and_samples_it_awake_with_one_request_per_adapter(
    tmp_path, tiny_qwen3, java
):
    require(importlib.util.find_spec("unsloth") is not None, "unsloth is not installed (make test installs it)")
    recipe = tiny_recipe(
        tmp_path, tiny_qwen3, ["collect", "build", "filter", "rwml", "policy", "eval"],
        model={"backend": "unsloth", "fast_inference": False},
        policy={"tasks_per_step": 2, "group_size": 2, "max_steps": 2, "episode_max_steps": 2, "save_steps": 1},
    )  # fmt: skip
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("UNSLOTH_VLLM")}
    result = subprocess.run(
        [sys.executable, "-c", ENGINE_PIPELINE_SCRIPT, str(recipe), str(REPO / "tests")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["standby"] is None  # importing the backend sets no standby: prepare_backend does, for vLLM recipes
    calls = [tuple(c) for c in record["calls"]]
    kinds = [c[0] for c in calls]
    # collect samples; the filter's SFT, RWML's GRPO and each policy update start with the engine asleep;
    # each next sampling wakes it
    assert [c for c in calls if c[0] == "train"] == [
        ("train", "SFTTrainer", True), ("train", "GRPOTrainer", True), ("train", "policy", True), ("train", "policy", True)
    ]  # fmt: skip
    assert kinds[0] == "generate" and kinds.count("sleep") == 4
    for i, kind in enumerate(kinds):
        if kind == "sleep":
            assert kinds[i + 1] == "train" and "wake" in kinds[i + 2 :]
    # the filter adapter (its predictions), the live policy LoRA once per policy step (each step's 2
    # sampling rounds share it), then the RWML and policy adapters (every eval turn) were each read once
    filter_adapter, rwml_adapter, policy_adapter = (
        str((tmp_path / "run/checkpoints" / s / "adapter").resolve()) for s in ("filter", "rwml", "policy")
    )
    live = live_lora_path()
    assert record["loads"] == [filter_adapter, live, live, rwml_adapter, policy_adapter]
    policy_requests = [c[2] for c in calls if c[0] == "generate" and c[2] in ("lora 2", "lora 3")]
    assert policy_requests == ["lora 2", "lora 2", "lora 3", "lora 3"]  # a fresh request after each update
    requests = [c[2] for c in calls if c[0] == "generate"]
    n = len(record["loads"])
    assert requests.count(f"lora {n - 1}") > 1 and requests.count(f"lora {n}") > 1  # eval reused its request
    assert not any(c[3] for c in calls if c[0] == "generate")  # no request seeded: torch's generator drives the engine
