"""Several processes under `accelerate launch`: each episode and prediction is done once by one of
them, the trainers train, only the main process writes, a killed run resumes, and the policy
stage's update equals the one-process update.

accelerate 1.16 starts several CPU processes with `--cpu` only through mpirun (`--mpirun_hostfile`);
`--multi_gpu` starts them through torchrun, and on a machine without a GPU they run on the CPU over
gloo, which is what rwml-lite asks accelerate for there.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_resume import kill_when, start

from conftest import REPO, episode_record, tiny_recipe
from rwml_lite.config import load_recipe
from rwml_lite.distributed import shards
from rwml_lite.errors import RwmlError
from rwml_lite.records import JsonlAppender, read_jsonl
from rwml_lite.rollout import merge_shards
from rwml_lite.schemas import append_episode, read_episodes

STAGES = ["collect", "build", "filter", "rwml", "policy", "eval"]
POLICY = {"start": "rwml", "tasks_per_step": 2, "group_size": 2, "max_steps": 2, "episode_max_steps": 3,
          "learning_rate": 0.01, "micro_batch_size": 2, "save_steps": 1, "invalid_action_penalty": 0.1}  # fmt: skip


def accelerate(processes: int) -> tuple[str, ...]:
    """`accelerate launch` of `processes` processes on this machine, on a free port, one thread each."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return (
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
    )  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread_per_process(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.mark.slow
def test_two_processes_play_every_episode_once_train_and_resume_after_a_kill(tmp_path, tiny_qwen3, java):
    recipe = tiny_recipe(
        tmp_path, tiny_qwen3, STAGES,
        agent={"history": 1, "max_new_tokens": 24, "parallel_episodes": 1},  # one episode at a time: kill between them
        collect={"num_tasks": 4, "rollouts_per_task": 2, "max_steps": 4},
        worldmodel={"history": 1, "val_fraction": 0.3,
                    "filter": {"samples": 2, "epochs": 1, "batch_size": 4, "max_new_tokens": 24}},
        policy=POLICY,
    )  # fmt: skip
    run = tmp_path / "run"
    rollouts = run / "rollouts.jsonl"

    # 1. killed in collect, once the two processes' shard files hold some episodes
    played = lambda: [ep for shard in shards(rollouts) for ep in read_episodes(shard)]  # noqa: E731
    kill_when(start(recipe, launcher=accelerate(2)), lambda: 2 <= len(played()) < 8)
    before_kill = {ep.episode_id: ep for ep in played()}
    assert not rollouts.exists()  # merged only when every process has played its share

    # 2. rerun to the end: the shards are merged, only the missing episodes are played
    log = tmp_path / "train.log"
    rerun = subprocess.run(
        [*accelerate(2), "-m", "rwml_lite", "train", str(recipe)], cwd=REPO, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:] + log.read_text()[-2000:]
    assert "> collect (resuming)" in rerun.stderr
    assert rerun.stderr.count("+ rwml done") == 1  # the main process reports, once
    episodes = {ep.episode_id: ep for ep in read_episodes(rollouts)}
    assert len(read_episodes(rollouts)) == len(episodes) == 8  # none twice
    assert sorted(episodes) == sorted(f"train-{t}#{r}" for t in range(4) for r in range(2))
    assert all(episodes[i] == ep for i, ep in before_kill.items())  # kept as played before the kill, not replayed
    assert shards(rollouts) == []
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert {s: e["status"] for s, e in stages.items()} == dict.fromkeys(STAGES, "done")

    # every eval episode and world-model prediction once, for each policy
    val = read_jsonl(run / "wm/val.jsonl")
    for variant in ("base", "rwml", "policy"):
        ids = [ep.episode_id for ep in read_episodes(run / f"eval/episodes_{variant}.jsonl")]
        assert sorted(ids) == ["test-20000#0", "test-20001#0"], variant
        predicted = [r["triplet_id"] for r in read_jsonl(run / f"eval/wm_{variant}.jsonl")]
        assert predicted == [t["triplet_id"] for t in val]  # in order, although dealt to two processes
    kept = read_jsonl(run / "wm/rwml.jsonl")
    assert json.loads((run / "wm/filter.json").read_text())["train_triplets"] == len(read_jsonl(run / "wm/train.jsonl"))
    assert 0 < len(kept)

    # the batches of the recipe are those of one optimizer step, shared by the two processes
    grpo = json.loads((run / "checkpoints/rwml/trainer_config.json").read_text())
    assert (grpo["per_device_train_batch_size"], grpo["gradient_accumulation_steps"]) == (4, 1)  # 2 x 4 completions
    sft = json.loads((run / "checkpoints/filter/trainer_config.json").read_text())
    assert sft["per_device_train_batch_size"] == 2  # 4 triplets per step
    for stage in ("rwml", "policy"):
        adapter = load_file(run / f"checkpoints/{stage}/adapter/adapter_model.safetensors")
        assert any(w.abs().sum() > 0 for name, w in adapter.items() if "lora_B" in name), stage  # B starts at 0
    steps = [m["step"] for m in read_jsonl(run / "metrics/policy.jsonl")]
    assert steps == [1, 2]  # logged once, by the main process
    for step in (1, 2):
        assert len(read_episodes(run / f"policy_rollouts/step-{step:05d}.jsonl")) == 4
    assert (run / "report.md").exists()


def test_a_policy_update_over_two_processes_is_the_one_process_update(tmp_path, tiny_qwen3):
    """Two mini batches of six turns (the second clipped against the log-probs taken before the first) and a KL
    term to the base model: the processes share every pass and take the same two updates."""
    recipe = tiny_recipe(
        tmp_path, tiny_qwen3, policy={**POLICY, "max_grad_norm": 1e6, "mini_batch_size": 6, "beta": 0.1}
    )
    script = str(REPO / "tests/policy_update_script.py")
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"update-{processes}.pt"
        launcher = accelerate(2) if processes == 2 else (sys.executable,)
        done = subprocess.run(
            [*launcher, script, str(tiny_qwen3), str(recipe), str(out)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        runs[processes] = torch.load(out)
    one, two = runs[1], runs[2]
    assert one["metrics"]["turns_trained"] == 12 and one["metrics"]["grad_norm"] > 0
    assert one["metrics"]["updates"] == 2 and one["metrics"]["kl"] > 0  # the second update sees a moved policy
    for key in ("turns", "turns_trained", "success", "reward", "updates"):
        assert two["metrics"][key] == one["metrics"][key]
    # summed over the processes: the same loss and gradient; each process alone has about half
    assert two["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"], rel=1e-4, abs=1e-6)
    assert two["metrics"]["grad_norm"] == pytest.approx(one["metrics"]["grad_norm"], rel=1e-4)
    assert two["metrics"]["kl"] == pytest.approx(one["metrics"]["kl"], rel=1e-3)
    assert set(two["change"]) == set(one["change"])
    for name, change in one["change"].items():
        torch.testing.assert_close(two["change"][name], change, rtol=1e-4, atol=1e-6)


def test_shards_left_by_a_kill_are_merged_once_and_a_torn_line_is_dropped(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    with JsonlAppender(path) as out:
        append_episode(out, episode_record("train-0#0", []))
    for rank, ids in ((0, ["train-0#0", "train-1#0"]), (1, ["train-0#1"])):  # train-0#0 merged before the kill
        with JsonlAppender(path.with_name(f"{path.name}.rank{rank}")) as out:
            for episode_id in ids:
                append_episode(out, episode_record(episode_id, []))
    with open(path.with_name(f"{path.name}.rank1"), "a") as f:
        f.write('{"schema": 1, "episode_id": "train-1#1", "st')  # the kill came in the middle of a line
    merge_shards(path)
    assert [ep.episode_id for ep in read_episodes(path)] == ["train-0#0", "train-1#0", "train-0#1"]
    assert shards(path) == []


def test_a_recipe_that_cannot_be_split_over_the_processes_is_refused(tmp_path, monkeypatch):
    recipe = tiny_recipe(tmp_path, tmp_path)  # grpo: 2 prompts x 4 completions, micro batches of 4; filter batch 4
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(RwmlError, match=r"grpo.micro_batch_size=4 on each of 3 processes must divide .* = 8"):
        load_recipe(recipe)
    with pytest.raises(RwmlError, match=r"worldmodel.filter.batch_size=4 must be a multiple of the 3 processes.*=6"):
        load_recipe(recipe, ["grpo.micro_batch_size=2", "grpo.group_size=3"])  # 6 completions: 2 on each
    with pytest.raises(RwmlError, match=r"model.backend=unsloth runs in one process, and this is one of 3"):
        load_recipe(recipe, ["model.backend=unsloth"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert load_recipe(recipe).grpo.micro_batch_size == 4
