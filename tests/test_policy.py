"""The policy stage: task-success advantages per group, loss on the agent's own tokens only, LoRA
trained and base frozen, and a killed run that resumes from its checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from test_resume import kill_when, start

from conftest import GOAL, ScriptedGenerator, episode_record, rwml_lite, tiny_recipe
from rwml_lite.config import AgentSettings, ModelSettings, TextWorldExpressSettings, load_recipe
from rwml_lite.envs import make_env
from rwml_lite.models import Sampling
from rwml_lite.models.hf import policy_model
from rwml_lite.prompts import agent_messages
from rwml_lite.records import read_jsonl
from rwml_lite.rollout import run_episodes
from rwml_lite.train.policy import _update, group_specs, read_policy_metrics, step_tasks
from rwml_lite.train.turns import (
    Turn,
    encode_turns,
    episode_return,
    group_advantages,
    step_turns,
    turn_loss,
)

ROLE = "You are an expert agent playing a text-based household game."
SETTINGS = TextWorldExpressSettings(
    game="twc", game_params="numLocations=1,numItemsToPutAway=1,includeDoors=0,limitInventorySize=0"
)


def test_advantages_are_returns_normalised_within_the_group():
    # mean 0.5, sample std sqrt(1/3): (1 - 0.5) / (0.57735 + 1e-4) = 0.86588
    assert group_advantages([1.0, 0.0, 0.0, 1.0]) == pytest.approx([0.86588, -0.86588, -0.86588, 0.86588], abs=1e-5)
    assert group_advantages([1.0, 1.0, 1.0]) == [0.0, 0.0, 0.0]  # a group that did equally well teaches nothing
    assert group_advantages([0.9] * 8) == [0.0] * 8  # exactly, not float noise that would still be trained
    assert group_advantages([1.0, 0.0, 0.0, 0.0], scale=False) == [0.75, -0.25, -0.25, -0.25]
    invalid = lambda n: [{"valid": False}] * n  # noqa: E731
    assert episode_return(episode_record("t#0", invalid(2), won=True), invalid_action_penalty=0.1) == pytest.approx(0.8)
    assert episode_return(episode_record("t#0", invalid(3)), invalid_action_penalty=0.0) == 0.0


def test_a_scripted_group_gets_the_advantages_of_its_known_successes(tmp_path, java):
    """Four episodes of one game: the first and third follow the engine's solution and win, the
    second and fourth look around and lose; every turn carries its episode's advantage."""
    env = make_env(SETTINGS, 10)
    env.reset("train-0", 0)
    gold = env.gold_actions()  # take the shirt, open the wardrobe, put the shirt in it
    env.close()

    class Alternating(ScriptedGenerator):
        """Even places of a batch (the live episodes in slot order) follow the solution, odd ones look around."""

        def generate(self, prompts, n, sampling):
            turn = lambda p: p[-1]["content"].count("\nAction: ")  # noqa: E731  past steps in the history
            return [[f"<action>{gold[turn(p)]}</action>" if k % 2 == 0 else "<action>look around</action>"]
                    for k, p in enumerate(prompts)]  # fmt: skip

    episodes = run_episodes(
        tmp_path / "step.jsonl", group_specs(["train-0"], "train", 4, step=1, seed=0), SETTINGS,
        Alternating(None), Sampling(), AgentSettings(history=5, parallel_episodes=4), len(gold), "group",
        keep_prompts=True,
    )  # fmt: skip
    won = {ep.episode_id: ep.won for ep in episodes}
    assert won == {"train-0#0": True, "train-0#1": False, "train-0#2": True, "train-0#3": False}
    turns, equal = step_turns(episodes, invalid_action_penalty=0.0)
    assert equal == 0 and len(turns) == 4 * len(gold)
    by_reply = {(t.completion, round(t.advantage, 5)) for t in turns}
    winning = {(f"<action>{action}</action>", 0.86588) for action in gold}
    assert by_reply == winning | {("<action>look around</action>", -0.86588)}
    assert all(t.prompt[-1]["content"].startswith(f"Task: {GOAL}") for t in turns)  # the prompt each turn saw


@pytest.fixture(scope="module")
def tiny_policy(tiny_qwen3):
    return policy_model(ModelSettings(name_or_path=str(tiny_qwen3), dtype="float32", lora={"r": 4, "alpha": 8}), 0)


def test_only_the_agents_reply_tokens_carry_loss(tiny_policy):
    model, tokenizer = tiny_policy
    observation = "You are in the kitchen. In one part of the room you see a fridge that is closed."
    prompt = agent_messages(ROLE, GOAL, [("You are in the pantry.", "move west")], observation,
                            ["look around", "open fridge"], 1, numbered=True)  # fmt: skip
    turns = [Turn(prompt, "2", truncated=False, advantage=1.0),
             Turn(prompt, "<think> </think><action>look around</action>", truncated=True, advantage=-0.5)]  # fmt: skip
    batch = encode_turns(tokenizer, turns)
    keep = batch["completion_mask"].shape[1]
    for row, turn in enumerate(turns):  # the weighted targets are the reply, and its end token if it ended
        targets = batch["input_ids"][row, -keep:][batch["completion_mask"][row] == 1]
        assert tokenizer.decode(targets) == turn.completion + ("" if turn.truncated else tokenizer.eos_token)

    captured = {}

    def keep_logits(module, inputs, logits):
        logits.retain_grad()
        captured["logits"] = logits

    hook = model.get_output_embeddings().register_forward_hook(keep_logits)
    turn_loss(model, batch, temperature=1.0, normalizer=10.0).backward()
    hook.remove()
    model.zero_grad()
    # logits get gradient exactly at the positions that predict a reply token: never at one that
    # predicts the observation, the history, the choices or padding
    touched = captured["logits"].grad.abs().sum(-1) > 0  # (turns, keep + 1)
    assert torch.equal(touched[:, :-1], batch["completion_mask"].bool()) and not touched[:, -1].any()


def test_one_update_moves_the_lora_and_leaves_the_base_frozen(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    recipe = load_recipe(tiny_recipe(tmp_path, tmp_path, policy={"micro_batch_size": 2, "learning_rate": 0.01}))
    prompt = agent_messages(ROLE, GOAL, [], "You are in the kitchen.", ["look around", "inventory"], 1)
    steps = lambda reply: [{"prompt": prompt, "completion": reply, "truncated": False, "valid": True}]  # noqa: E731
    episodes = [episode_record(f"train-0#{i}", steps(r), won=won)
                for i, (won, r) in enumerate([(True, "<action>inventory</action>"), (False, "<action>look around</action>")])]  # fmt: skip
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    metrics = _update(model, tokenizer, optimizer, scheduler, episodes, recipe, torch.device("cpu"))
    assert metrics["turns_trained"] == 2 and metrics["success"] == 50.0 and metrics["grad_norm"] > 0
    after = dict(model.named_parameters())
    assert any(not torch.equal(after[n], v) for n, v in lora.items() if "lora_B" in n)
    assert all(torch.equal(after[n], v) for n, v in base.items())


def test_each_pass_over_the_tasks_plays_every_task_once_in_a_seeded_order():
    tasks = [f"train-{i}" for i in range(6)]
    first_pass = step_tasks(tasks, 1, 3, seed=0) + step_tasks(tasks, 2, 3, seed=0)
    assert sorted(first_pass) == tasks
    assert step_tasks(tasks, 3, 3, seed=0) == step_tasks(tasks, 3, 3, seed=0)  # a resumed run plays the same
    assert step_tasks(tasks, 1, 3, seed=1) != step_tasks(tasks, 1, 3, seed=0)
    # 4 per step from 6: step 2 runs into the second pass and still draws 4 distinct tasks
    assert all(len(set(step_tasks(tasks, step, 4, seed=0))) == 4 for step in range(1, 20))
    specs = group_specs(["train-4", "train-1"], "train", 2, step=5, seed=0)
    assert [s.episode_id for s in specs] == ["train-4#0", "train-4#1", "train-1#0", "train-1#1"]
    assert specs[0].seed == specs[1].seed != specs[2].seed  # one task and seed per group


POLICY = {"start": "base", "tasks_per_step": 2, "group_size": 2, "max_steps": 3, "episode_max_steps": 3,
          "learning_rate": 0.01, "micro_batch_size": 4, "save_steps": 1, "invalid_action_penalty": 0.1}  # fmt: skip


def test_policy_stage_trains_its_lora_and_resumes_after_a_kill(tmp_path, tiny_qwen3, java):
    recipe = tiny_recipe(
        tmp_path, tiny_qwen3, ["collect", "build", "policy", "eval"], policy=POLICY,
        eval={"num_tasks": 2, "runs": 1, "max_steps": 3},
    )  # fmt: skip
    run = tmp_path / "run"

    kill_when(start(recipe), lambda: (run / "checkpoints/policy/checkpoint-1/training_state.pt").exists())
    first = (run / "policy_rollouts/step-00001.jsonl").stat().st_mtime_ns
    result = rwml_lite("train", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "> policy (resuming)" in result.stderr
    assert (run / "policy_rollouts/step-00001.jsonl").stat().st_mtime_ns == first  # step 1 was not played again

    logs = read_policy_metrics(run / "metrics/policy.jsonl")
    assert [m["step"] for m in logs] == [1, 2, 3]
    for m in logs:  # 2 tasks x 2 episodes; the tiny model never wins, so returns differ by invalid actions only
        assert m["success"] == 0.0 and m["reward"] <= 0 and 0 <= m["invalid_rate"] <= 100
    assert any(m["turns_trained"] > 0 and m["grad_norm"] > 0 for m in logs)
    for step in (1, 2, 3):
        assert len(read_jsonl(run / f"policy_rollouts/step-{step:05d}.jsonl")) == 4
    adapter = load_file(run / "checkpoints/policy/adapter/adapter_model.safetensors")
    assert any(v.abs().max() > 0 for k, v in adapter.items() if "lora_B" in k)  # a fresh LoRA starts at 0
    assert sorted(p.name for p in (run / "checkpoints/policy").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    evaluated = json.loads((run / "manifest.json").read_text())["stages"]["eval"]["summary"]
    assert set(evaluated) == {"base", "policy"}
    report = (run / "report.md").read_text()
    assert "| policy |" in report and "plots/policy.png" in report
