"""A killed `train` resumes: finished stages are skipped, no episode is lost or duplicated, and GRPO steps
after its checkpoint are the steps an uninterrupted run trains."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import REPO, rwml_lite, tiny_recipe
from rwml_lite.records import read_jsonl

pytestmark = pytest.mark.slow  # whole `train` runs through the CLI, killed and resumed


def start(recipe: Path, command: str = "train", launcher: tuple[str, ...] = (sys.executable,)) -> subprocess.Popen:
    """`python -m rwml_lite COMMAND RECIPE` (or under another `launcher`), logging to train.log beside the recipe."""
    log = open(recipe.parent / "train.log", "w")
    return subprocess.Popen([*launcher, "-m", "rwml_lite", command, str(recipe)], cwd=REPO, stdout=log, stderr=log)


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, (
            f"the run ended before the kill point: {Path(proc.args[-1]).with_name('train.log').read_text()[-2000:]}"
        )
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.02)
    # the run and every process it started (torchrun puts its workers in sessions of their own), as a lost machine
    for process in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    proc.wait()


def resume_recipe(folder: Path, model_dir: Path, stages: list[str] | None = None) -> Path:
    """8 episodes played one at a time (a kill falls between them), then 3 GRPO steps, checkpointed after each."""
    return tiny_recipe(
        folder, model_dir, stages,
        agent={"history": 1, "max_new_tokens": 24, "parallel_episodes": 1},
        collect={"num_tasks": 4, "rollouts_per_task": 2, "max_steps": 4},
        grpo={"group_size": 4, "batch_size": 2, "micro_batch_size": 8, "learning_rate": 0.01, "max_steps": 3,
              "max_completion_length": 24, "save_steps": 1},
    )  # fmt: skip


def test_sigkill_during_collect_and_during_rwml_then_resume(tmp_path, tiny_qwen3, java):
    recipe = resume_recipe(tmp_path, tiny_qwen3)
    run = tmp_path / "run"
    rollouts, manifest = run / "rollouts.jsonl", run / "manifest.json"

    # 1. killed in the middle of collect, after some episodes were written
    kill_when(start(recipe), lambda: rollouts.exists() and 2 <= len(read_jsonl(rollouts)) < 8)
    partial = [e["episode_id"] for e in read_jsonl(rollouts)]
    assert json.loads(manifest.read_text())["stages"]["collect"]["status"] == "running"

    # 2. resumed, then killed in rwml once a checkpoint exists
    kill_when(start(recipe), lambda: (run / "checkpoints/rwml/checkpoint-1/trainer_state.json").exists())
    episodes = [e["episode_id"] for e in read_jsonl(rollouts)]
    assert episodes[: len(partial)] == partial  # nothing written before the kill was lost
    assert sorted(episodes) == sorted(f"train-{t}#{r}" for t in range(4) for r in range(2))  # none twice
    stages = json.loads(manifest.read_text())["stages"]
    assert {s: e["status"] for s, e in stages.items()} == {
        "collect": "done",
        "build": "done",
        "filter": "done",
        "rwml": "running",
    }

    # 3. finished: earlier stages skipped, GRPO continued from its checkpoint
    result = rwml_lite("train", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("collect", "build", "filter"):
        assert f"= {stage}: already done, skipped" in result.stderr
    assert "> rwml (resuming)" in result.stderr
    steps = [m["step"] for m in read_jsonl(run / "metrics/rwml.jsonl") if "reward" in m]
    assert steps[-2:] == [2, 3] and steps.count(1) == 1  # step 1 was not trained again
    assert [e["episode_id"] for e in read_jsonl(rollouts)] == episodes
    assert all(e["status"] == "done" for e in json.loads(manifest.read_text())["stages"].values())
    assert (run / "report.md").exists() and (run / "eval/rwml.json").exists()


#: The GRPO steps of resume_recipe's run when nothing kills it (reward, loss and signal share, as
#: test_train_cli.PINNED, whose comment says why these sampled values hold on both CPU kinds and why 1e-6), recorded
#: on an AMD EPYC (2026-12-08) by a `train` of the recipe that ran uninterrupted: steps 1-3 of its
#: metrics/rwml.jsonl. The run below is killed in rwml, so its collect, build and filter are those of that run.
UNINTERRUPTED = {
    "reward": [0.75, 0.625, 0.5],
    "loss": [-0.0538115, -0.0435356, -0.1754388],
    "signal_share": [0.5, 1.0, 1.0],
}


def test_grpo_resumed_from_a_checkpoint_trains_the_uninterrupted_runs_later_steps(tmp_path, tiny_qwen3, java):
    """The checkpoint restores the LoRA, Adam's moments, the schedule, torch's generator (the groups' samples) and
    the data order: steps 2 and 3 sample, score and update as the run that was never killed.

    (A run killed in collect does not: the resumed collect seeds sampling again and plays the episodes left in a
    stream that starts where the killed one started, so those episodes, and every stage after, differ.)"""
    stages = ["collect", "build", "filter", "rwml"]  # eval comes after the steps compared: not needed
    recipe = resume_recipe(tmp_path, tiny_qwen3, stages)
    run = tmp_path / "run"
    kill_when(start(recipe), lambda: (run / "checkpoints/rwml/checkpoint-1/trainer_state.json").exists())
    assert [m["step"] for m in read_jsonl(run / "metrics/rwml.jsonl") if "reward" in m] == [1]

    result = rwml_lite("train", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "> rwml (resuming)" in result.stderr
    logs = [m for m in read_jsonl(run / "metrics/rwml.jsonl") if "reward" in m]
    assert [m["step"] for m in logs] == [1, 2, 3]  # step 1 logged by the killed run, 2 and 3 by the resumed one
    assert {key: [m[key] for m in logs] for key in UNINTERRUPTED} == {
        key: pytest.approx(values, abs=1e-6) for key, values in UNINTERRUPTED.items()
    }
