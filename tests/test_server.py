"""Sampling from a vLLM server on GPUs of its own (`model.server`): collect and eval through its OpenAI-compatible
API play the same episodes as a local generator with the same answers, saved adapters are loaded there by
path, and the world model's prefill is continued as the local generators continue it."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import ChatServer, ScriptedGenerator, tiny_recipe
from rwml_lite.config import load_recipe
from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling
from rwml_lite.records import read_jsonl


def answer(messages: list[dict]) -> str:
    """A reply that depends on the whole prompt: one of the admissible actions it lists, picked by its hash."""
    prompt = messages[-1]["content"]
    actions = [line.strip()[2:] for line in prompt.splitlines() if line.strip().startswith("- ")] or ["look around"]
    pick = int(hashlib.sha256(json.dumps(messages).encode()).hexdigest(), 16) % len(actions)
    return f"<think>step</think><action>{actions[pick]}</action>"


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
    import rwml_lite.models.hf as hf
    from rwml_lite.pipeline import run

    stages = ["collect", "build", "eval"]
    sections = {"collect": {"num_tasks": 2, "rollouts_per_task": 2, "max_steps": 4},
                "eval": {"policies": ["base"], "num_tasks": 2, "runs": 2, "max_steps": 4}}  # fmt: skip
    with monkeypatch.context() as local:
        local.setattr(hf, "generator", lambda settings, adapter=None: ScriptedGenerator(lambda p, i: answer(p)))
        (tmp_path / "local").mkdir()
        here = run(load_recipe(tiny_recipe(tmp_path / "local", tiny_qwen3, stages, **sections)), stages)
    (tmp_path / "served").mkdir()
    with ChatServer(lambda body: {"content": answer(body["messages"])}) as server:
        served = load_recipe(
            tiny_recipe(tmp_path / "served", tiny_qwen3, stages, model={"server": {"url": server.root}}, **sections)
        )
        there = run(served, stages)
    assert played(there.root) == played(here.root) and len(played(here.root)) == 2 * 2 + 2 * 2
    chats = server.chats()
    turns = sum(len(steps) for _, steps, _, _ in played(there.root))
    predictions = len(read_jsonl(there.root / "wm/val.jsonl"))  # eval's world-model score: one per held-out triplet
    assert len(chats) == turns + predictions  # one request per agent turn and per prediction, none lost or repeated
    assert {body["model"] for body in chats} == {str(tiny_qwen3)}  # the served base model: model.name_or_path
    assert all(isinstance(body["seed"], int) for body in chats)  # seeded from the stage's torch generator


def test_a_saved_adapter_is_loaded_on_the_server_by_path_and_then_sampled_by_that_name(tmp_path):
    from rwml_lite.config import ServerSettings
    from rwml_lite.models.endpoint import served_generator

    adapter = tmp_path / "checkpoints/rwml/adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    with ChatServer(lambda body: {"content": "</next_state>"}) as server:
        generator = served_generator(ServerSettings(url=server.root), "Qwen/Qwen3-8B", adapter)
        replies = generator.generate(
            [[{"role": "user", "content": "What happens?"}]], 2, Sampling(prefill="<next_state>")
        )
        (load_path, load), (chat_path, chat) = server.seen
    assert load_path == "/v1/load_lora_adapter" and load["lora_path"] == str(adapter.resolve())
    assert chat_path == "/v1/chat/completions" and chat["model"] == load["lora_name"] and chat["n"] == 2
    # the prefill is the start of the assistant's turn, which the server continues; replies begin with it
    assert chat["messages"][-1] == {"role": "assistant", "content": "<next_state>"} and chat["continue_final_message"]
    assert replies == [["<next_state></next_state>", "<next_state></next_state>"]]
    with ChatServer(lambda body: {"content": ""}, refuse_adapters=True) as server:
        with pytest.raises(RwmlError, match="did not load the adapter.*--enable-lora"):
            served_generator(ServerSettings(url=server.root), "Qwen/Qwen3-8B", adapter)


def test_a_server_is_refused_with_the_unsloth_backend_that_samples_in_process():
    from conftest import REPO

    with pytest.raises(RwmlError, match="model.server samples from a vLLM server of its own.*set model.backend=hf"):
        load_recipe(REPO / "recipes/alfworld_qwen3_8b.yaml", ["model.server.url=http://localhost:8000"])
