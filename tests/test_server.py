"""Sampling from a vLLM server on GPUs of its own (`model.server`): the prompt is rendered here exactly as the
local backends render it and completed there, so collect and eval through the server play the same episodes
as a local generator with the same answers; saved adapters are loaded there by path."""

from __future__ import annotations

import collections
import hashlib
import threading

import pytest

from conftest import REPO, ChatServer, ScriptedGenerator, tiny_recipe
from rwml_lite.config import load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling
from rwml_lite.records import read_jsonl


def answer(text: str) -> str:
    """A reply that depends on the whole rendered prompt: one of the admissible actions it lists, by its hash."""
    actions = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")] or ["look around"]
    return f"<think>step</think><action>{actions[int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(actions)]}</action>"


class OddAsks:
    """Whether a prompt is being asked for the 1st, 3rd, 5th ... time: the server's handler threads answer the
    members of a group, which send the same prompt at once, alternately, whatever order they arrive in."""

    def __init__(self):
        self.asked, self.lock = collections.Counter(), threading.Lock()

    def __call__(self, prompt: str) -> bool:
        with self.lock:
            self.asked[prompt] += 1
            return self.asked[prompt] % 2 == 1


def played(run) -> list[tuple]:
    """Every episode of collect and of the base model's eval as (id, actions, observations, won)."""
    episodes = [*read_jsonl(run / "rollouts.jsonl"), *read_jsonl(run / "eval/episodes_base.jsonl")]
    return sorted(
        (e["episode_id"], [s["action"] for s in e["steps"]], [s["next_observation"] for s in e["steps"]], e["won"])
        for e in episodes
    )


def test_collect_and_eval_through_the_server_play_the_local_generators_episodes(
    tmp_path, tiny_qwen3, java, monkeypatch
):
    """The local generator answers from the prompt it renders, the server from the text it receives: equal
    episodes mean equal prompts (template, prefill, history) and replies parsed alike."""
    from transformers import AutoTokenizer

    import rwml_lite.models.hf as hf
    from rwml_lite.pipeline import run

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    stages = ["collect", "build", "eval"]
    sections = {"collect": {"num_tasks": 2, "rollouts_per_task": 2, "max_steps": 4},
                "eval": {"policies": ["base"], "num_tasks": 2, "runs": 2, "max_steps": 4},
                "worldmodel": {"prefill": "<think> </think><next_state>"}}  # fmt: skip
    local_reply = lambda p, i: answer(hf.render_prompt(tokenizer, p))  # noqa: E731
    (tmp_path / "local").mkdir()
    (tmp_path / "served").mkdir()
    with monkeypatch.context() as local:
        local.setattr(hf, "generator", lambda settings, adapter=None: ScriptedGenerator(local_reply))
        here = run(load_recipe(tiny_recipe(tmp_path / "local", tiny_qwen3, stages, **sections)), stages)
    with ChatServer(lambda body: (answer(body["prompt"]), "stop")) as server:
        model = {"server": {"url": server.url}}  # with /v1, as the other endpoint fields are written
        there = run(load_recipe(tiny_recipe(tmp_path / "served", tiny_qwen3, stages, model=model, **sections)), stages)
    assert played(there.root) == played(here.root) and len(played(here.root)) == 2 * 2 + 2 * 2
    requests = server.requests()
    turns = sum(len(steps) for _, steps, _, _ in played(there.root))
    predictions = len(read_jsonl(there.root / "wm/val.jsonl"))  # eval's world-model score: one per held-out triplet
    assert len(requests) == turns + predictions  # one request per agent turn and per prediction, none lost or repeated
    assert {body["model"] for body in requests} == {str(tiny_qwen3)}  # the served base model: model.name_or_path
    # sampled as the local backends sample: no top_k or penalty from the model's generation config, no second BOS
    assert all(b["top_k"] == 0 and b["min_p"] == 0 and b["repetition_penalty"] == 1 and not b["add_special_tokens"]
               for b in requests)  # fmt: skip
    prefilled = [b["prompt"] for b in requests if b["prompt"].endswith("<think> </think><next_state>")]
    assert len(prefilled) == predictions  # the world model's prefill ends its prompts, as it does locally


def test_requests_carry_no_seed_and_cut_replies_say_so(tiny_qwen3):
    """A seeded request puts vLLM's whole batch on its one-row-at-a-time sampler (bench/vllm_seeds.py)."""
    from rwml_lite.config import build_recipe
    from rwml_lite.models.endpoint import served_generator

    with ChatServer(lambda body: ("<action>look", "length")) as server:
        recipe = build_recipe({"model": {"name_or_path": str(tiny_qwen3), "server": {"url": server.root}}}, [], "t")
        prompts = [[{"role": "user", "content": f"Room {i}"}] for i in range(3)]
        replies = served_generator(recipe.model).generate(prompts, 1, Sampling(max_new_tokens=5))
    assert len(server.requests()) == 3 and not any("seed" in body for body in server.requests())
    assert [r[0] for r in replies] == ["<action>look"] * 3 and all(r[0].truncated for r in replies)


def test_a_saved_adapter_is_loaded_on_the_server_by_path_and_then_sampled_by_that_name(tmp_path, tiny_qwen3):
    from rwml_lite.config import build_recipe
    from rwml_lite.models.endpoint import served_generator

    adapter = tmp_path / "checkpoints/rwml/adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    with ChatServer(lambda body: ("a hall.</next_state>", "stop")) as server:
        recipe = build_recipe({"model": {"name_or_path": str(tiny_qwen3), "server": {"url": server.root}}}, [], "t")
        replies = served_generator(recipe.model, adapter).generate(
            [[{"role": "user", "content": "What happens?"}]], 2, Sampling(prefill="<next_state>You see ")
        )
        (load_path, load), (path, body) = server.seen
    assert load_path == "/v1/load_lora_adapter" and load["lora_path"] == str(adapter.resolve())
    assert path == "/v1/completions" and body["model"] == load["lora_name"] and body["n"] == 2
    assert body["prompt"].endswith("<|im_start|>assistant\n<next_state>You see ")  # rendered here, prefill last
    assert replies == [["<next_state>You see a hall.</next_state>"] * 2]
    with ChatServer(lambda body: ("", "stop"), refuse_adapters=True) as server:
        recipe = build_recipe({"model": {"name_or_path": str(tiny_qwen3), "server": {"url": server.root}}}, [], "t")
        with pytest.raises(RwmlError, match="did not load the adapter.*--enable-lora"):
            served_generator(recipe.model, adapter)


def test_a_server_is_refused_with_the_unsloth_backend_that_samples_in_process():
    with pytest.raises(RwmlError, match="model.server samples from a vLLM server of its own.*set model.backend=hf"):
        load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml", ["model.server.url=http://localhost:8000"])


def test_the_policy_stage_samples_each_steps_lora_on_the_server(tmp_path, tiny_qwen3, java):
    """Before each step the LoRA as trained so far is saved and loaded on the server under a new name, the
    step's episodes are sampled by that name, and the previous step's adapter is unloaded."""
    from safetensors.torch import load, load_file

    from rwml_lite.pipeline import run

    # the members of a group ask the same first prompt, and every other asker is not answered with an action: groups
    # differ in invalid steps, so every step trains
    odd = OddAsks()
    reply = lambda body: ("<action>look around</action>" if odd(body["prompt"]) else "I am not sure.", "stop")  # noqa: E731
    policy = {"start": "base", "tasks_per_step": 2, "group_size": 2, "max_steps": 2, "episode_max_steps": 3,
              "learning_rate": 0.01, "micro_batch_size": 4, "save_steps": 1, "invalid_action_penalty": 0.1}  # fmt: skip
    with ChatServer(reply) as server:
        stages = ["collect", "build", "policy"]  # a recipe runs the policy stage after collect and build
        recipe = tiny_recipe(tmp_path, tiny_qwen3, stages, model={"server": {"url": server.url}}, policy=policy,
                             collect={"num_tasks": 2, "rollouts_per_task": 1, "max_steps": 3})  # fmt: skip
        folder = run(load_recipe(recipe), stages)
    live = folder.checkpoints("policy") / "live"
    loads = server.requests("/v1/load_lora_adapter")
    names = [body["lora_name"] for body in loads]
    assert len(set(names)) == 2 and {body["lora_path"] for body in loads} == {str(live.resolve())}
    assert [body["lora_name"] for body in server.requests("/v1/unload_lora_adapter")] == names  # none left behind
    for step, name in enumerate(names, 1):
        turns = sum(len(e["steps"]) for e in read_jsonl(folder.policy_rollouts(step)))
        assert [body["model"] for body in server.requests()].count(name) == turns  # the step's sampler, each turn
    first, second = (load(server.adapter_weights[name]) for name in names)
    assert all(not w.any() for key, w in first.items() if "lora_B" in key)  # step 1: the fresh LoRA
    after_step_1 = load_file(folder.checkpoints("policy") / "checkpoint-1/adapter_model.safetensors")
    assert second.keys() == after_step_1.keys() and all(second[k].equal(after_step_1[k]) for k in second)
    assert any(w.any() for key, w in second.items() if "lora_B" in key)  # step 2: the LoRA after step 1's update


def test_rwml_samples_its_groups_on_the_server_from_each_steps_lora(tmp_path, tiny_qwen3, java):
    """GRPO through TRL's rollout_func: each optimizer step's groups come from the server, sampled by the LoRA of
    that step (saved and loaded by path), as token ids with their log-probs."""
    from safetensors.torch import load, load_file
    from transformers import AutoTokenizer

    from rwml_lite.pipeline import run

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    tokenize = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] + [end]  # noqa: E731

    odd = OddAsks()
    given = []  # (model, whether the reply was tagged) for each GRPO request

    def reply(body):
        if body.get("logprobs") is None:  # collect and the filter: an admissible action
            return answer(body["prompt"]), "stop"
        # GRPO: every other sample of a prompt has no tag (reward 0), the rest are tagged (1 at tau_d 1.0): every
        # group trains
        given.append((body["model"], odd(body["prompt"])))
        return ("<next_state>A room.</next_state>" if given[-1][1] else "No idea."), "stop"

    with ChatServer(reply, tokenize=tokenize) as server:
        recipe = tiny_recipe(tmp_path, tiny_qwen3, ["collect", "build", "filter", "rwml"],
                             model={"server": {"url": server.url}})  # fmt: skip
        folder = run(load_recipe(recipe), ["collect", "build", "filter", "rwml"])
    live = str((folder.checkpoints("rwml") / "live").resolve())
    names = [body["lora_name"] for body in server.requests("/v1/load_lora_adapter") if body["lora_path"] == live]
    assert len(set(names)) == 2  # one adapter per optimizer step (grpo.max_steps 2)
    tagged = []  # per step: the share of its replies that carry the tag
    for name in names:
        sampled = [body for body in server.requests() if body["model"] == name]
        assert len(sampled) == 2 * 4 and all(b["logprobs"] == 0 and b["return_tokens_as_token_ids"] for b in sampled)
        tagged.append(sum(was for model, was in given if model == name) / len(sampled))
    unloaded = [body["lora_name"] for body in server.requests("/v1/unload_lora_adapter")]
    assert set(names) <= set(unloaded)
    first, second = (load(server.adapter_weights[name]) for name in names)
    assert all(not w.any() for key, w in first.items() if "lora_B" in key)  # step 1: the fresh LoRA
    after_step_1 = load_file(folder.checkpoints("rwml") / "checkpoint-1/adapter_model.safetensors")
    assert second.keys() == after_step_1.keys() and all(second[k].equal(after_step_1[k]) for k in second)
    rewards = [m["reward"] for m in read_jsonl(folder.metrics("rwml")) if "reward" in m]
    assert rewards == tagged  # GRPO scored the server's replies
