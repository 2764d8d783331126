"""The policy stage: task-success advantages per group (per turn, as verl-agent), the clipped loss on the
agent's own sampled tokens only, mini-batch updates, the KL term to the reference, LoRA trained and base
frozen, and a killed run that resumes from its checkpoint."""

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
from rwml_lite.models.hf import HFGenerator, policy_model
from rwml_lite.prompts import agent_messages
from rwml_lite.records import read_jsonl
from rwml_lite.rollout import Play, run_episodes
from rwml_lite.train.policy import Reference, _update, group_specs, read_policy_metrics, step_tasks
from rwml_lite.train.turns import (
    Turn,
    encode_turns,
    episode_return,
    group_advantages,
    reply_logps,
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


def test_an_invalid_turn_of_a_winning_episode_is_advantaged_below_its_valid_turns():
    """verl-agent's per-turn penalty: returns 1, 0.9 (the invalid turn), 1 for the winner, 0, 0 for the loser;
    normalised over the group's five turns (mean 0.58, sample std 0.5310), the invalid turn gets (0.9 - 0.58) /
    0.5311 = 0.6025 against 0.7908 for its episode's valid turns. Charged per episode instead, every turn of the
    winner would carry the same advantage."""
    won = episode_record("t#0", [{"valid": True}, {"valid": False}, {"valid": True}], won=True)
    lost = episode_record("t#1", [{"valid": True}, {"valid": True}])
    turns, equal = step_turns([won, lost], invalid_action_penalty=0.1)
    assert equal == 0
    assert [t.advantage for t in turns] == pytest.approx([0.7908, 0.6025, 0.7908, -1.0920, -1.0920], abs=1e-4)
    per_episode, _ = step_turns([won, lost], invalid_action_penalty=0.1, stats="episode")
    assert [t.advantage for t in per_episode] == pytest.approx([0.7070] * 3 + [-0.7070] * 2, abs=1e-4)


def test_the_clipped_loss_and_its_gradient_worked_by_hand():
    """One reply of three tokens whose log-probs moved by +0.2, -1 and 0 since sampling: ratios 1.2214, 0.3679
    and 1, clipped to [0.8, 1.2]. With advantage +1 the loss is -(1.2 + 0.3679 + 1) / 3, the first token (ratio
    above the clip) has no gradient; with -1 it is (1.2214 + 0.8 + 1) / 3 and the second (below it) has none."""
    old = torch.tensor([[-1.2, -1.0, -0.5]])
    for advantage, loss_by_hand, gradient_by_hand in (
        (1.0, -(1.2 + 0.36788 + 1.0) / 3, [0.0, -0.36788 / 3, -1 / 3]),
        (-1.0, (1.22140 + 0.8 + 1.0) / 3, [1.22140 / 3, 0.0, 1 / 3]),
    ):
        logps = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
        batch = {"completion_mask": torch.ones(1, 3), "advantages": torch.tensor([advantage]), "old_logps": old}
        loss, stats = turn_loss(logps, batch, normalizer=3.0, epsilon=0.2)
        loss.backward()
        assert loss.item() == pytest.approx(loss_by_hand, abs=1e-4) and stats["clipped"] == 2
        assert logps.grad[0].tolist() == pytest.approx(gradient_by_hand, abs=1e-4)
    # verl's dual clip: a negative advantage's token whose ratio grew to e^1.5 = 4.48 costs 3 x |A|, no gradient
    logps = torch.tensor([[0.0]], requires_grad=True)
    batch = {
        "completion_mask": torch.ones(1, 1),
        "advantages": torch.tensor([-1.0]),
        "old_logps": torch.tensor([[-1.5]]),
    }
    loss, _ = turn_loss(logps, batch, normalizer=1.0)
    loss.backward()
    assert loss.item() == pytest.approx(3.0) and logps.grad.item() == 0.0


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
        tmp_path / "step.jsonl",
        group_specs(["train-0"], "train", 4, step=1, seed=0),
        Play(
            SETTINGS, Alternating(None), Sampling(), AgentSettings(history=5, parallel_episodes=4), len(gold), "group"
        ),
        keep_prompts=True,
    )
    won = {ep.episode_id: ep.won for ep in episodes}
    assert won == {"train-0#0": True, "train-0#1": False, "train-0#2": True, "train-0#3": False}
    turns, equal = step_turns(episodes, invalid_action_penalty=0.0, stats="episode")
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
    loss, _ = turn_loss(reply_logps(model, batch, temperature=1.0), batch, normalizer=10.0)
    loss.backward()
    hook.remove()
    model.zero_grad()
    # logits get gradient exactly at the positions that predict a reply token: never at one that
    # predicts the observation, the history, the choices or padding
    touched = captured["logits"].grad.abs().sum(-1) > 0  # (turns, keep + 1)
    assert torch.equal(touched[:, :-1], batch["completion_mask"].bool()) and not touched[:, -1].any()


def _fixed_step():
    """Two tasks, each a won and a lost episode of three turns with different replies: 12 turns, all advantaged."""
    replies = ["<action>inventory</action>", "<action>look around</action>", "I think <action>take shirt</action>"]
    prompt = lambda room, k: agent_messages(ROLE, GOAL, [], f"You are in the {room}. Turn {k}.", ["look around"], 1)  # noqa: E731
    return [
        episode_record(f"train-{t}#{g}", [{"prompt": prompt(room, k), "completion": replies[(t + g + k) % 3],
                                           "truncated": False, "valid": True} for k in range(3)], won=g == 0)
        for t, room in enumerate(["kitchen", "bedroom"]) for g in range(2)
    ]  # fmt: skip


@pytest.fixture
def fresh_lora(tiny_policy):
    """The tiny policy with its LoRA as initialised, put back after the test."""
    model, tokenizer = tiny_policy
    saved = {n: q.detach().clone() for n, q in model.named_parameters() if q.requires_grad}
    yield model, tokenizer
    with torch.no_grad():
        for n, q in model.named_parameters():
            if n in saved:
                q.copy_(saved[n])
    model.zero_grad(set_to_none=True)


def _sgd_update(model, tokenizer, recipe, episodes, reference=None) -> tuple[dict, dict]:
    """One `_update` with plain SGD at lr 1 (a weight's change is minus its summed gradient); returns the metrics
    and each LoRA weight's change. The weights are put back afterwards."""
    lora = {n: q for n, q in model.named_parameters() if q.requires_grad}
    before = {n: q.detach().clone() for n, q in lora.items()}
    optimizer = torch.optim.SGD(list(lora.values()), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    metrics = _update(model, tokenizer, optimizer, scheduler, episodes, recipe, torch.device("cpu"), 1, reference)
    change = {n: q.detach() - before[n] for n, q in lora.items()}
    with torch.no_grad():
        for n, q in lora.items():
            q.copy_(before[n])
    return metrics, change


def test_mini_batches_take_one_clipped_update_each_and_one_is_the_plain_policy_gradient(fresh_lora, tmp_path):
    model, tokenizer = fresh_lora
    policy = {"micro_batch_size": 4, "beta": 0.0, "max_grad_norm": 1e6}
    episodes = _fixed_step()
    with torch.no_grad():  # a LoRA away from 0, so that A gets gradient too
        for n, q in model.named_parameters():
            if "lora_B" in n:
                q.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    changes = {}
    for mini, updates in ((None, 1), (4, 3), (5, 3)):
        recipe = load_recipe(tiny_recipe(tmp_path, tmp_path, policy={**policy, "mini_batch_size": mini}))
        metrics, changes[mini] = _sgd_update(model, tokenizer, recipe, episodes)
        assert metrics["updates"] == updates and metrics["turns_trained"] == 12
    # the first update of 4 turns is no longer the whole step's: a clipped step per mini batch
    assert not torch.allclose(changes[4]["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"],
                              changes[None]["base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"])  # fmt: skip
    # one mini batch: minus the gradient of -sum(advantage x log p) / reply tokens, today's policy gradient
    turns, _ = step_turns(episodes, 0.0)
    batch = encode_turns(tokenizer, turns)
    model.zero_grad(set_to_none=True)
    logps = reply_logps(model, batch, temperature=1.0)
    (-(batch["advantages"][:, None] * logps).sum() / batch["completion_mask"].sum()).backward()
    for n, q in model.named_parameters():
        if q.requires_grad:
            torch.testing.assert_close(changes[None][n], -q.grad, rtol=1e-4, atol=1e-7)
    model.zero_grad(set_to_none=True)


def test_the_kl_term_is_zero_at_the_reference_and_pulls_a_moved_policy_back(fresh_lora, tmp_path):
    model, tokenizer = fresh_lora
    reference = Reference(model, from_base_lora=True)  # the base: the adapter switched off
    policy = {"micro_batch_size": 4, "max_grad_norm": 1e6}
    plain = load_recipe(tiny_recipe(tmp_path, tmp_path, policy={**policy, "beta": 0.0}))
    held = load_recipe(tiny_recipe(tmp_path, tmp_path, policy={**policy, "beta": 0.5}))
    episodes = _fixed_step()
    # a fresh LoRA (B = 0) is the base itself: no KL, the same update as without the term
    metrics, change = _sgd_update(model, tokenizer, held, episodes, reference)
    assert metrics["kl"] == 0.0
    _, without = _sgd_update(model, tokenizer, plain, episodes)
    for n in change:
        torch.testing.assert_close(change[n], without[n], rtol=1e-3, atol=1e-7)
    # moved away from the base, with returns that teach nothing (all lost): the KL alone steps it back
    with torch.no_grad():
        for n, q in model.named_parameters():
            if "lora_B" in n:
                q.normal_(0, 0.2, generator=torch.Generator().manual_seed(2))
    lost = [ep.model_copy(update={"won": False}) for ep in episodes]
    before, _ = _sgd_update(model, tokenizer, held, lost, reference)
    lora = {n: q for n, q in model.named_parameters() if q.requires_grad}
    _, step = _sgd_update(model, tokenizer, held, lost, reference)
    with torch.no_grad():
        for n, q in lora.items():
            q.add_(0.01 * step[n])  # a small step along the update
    after, _ = _sgd_update(model, tokenizer, held, lost, reference)
    assert before["kl"] > 0 and after["kl"] < before["kl"]


@pytest.mark.parametrize("kind", ["starting adapter", "whole-model copy"])
def test_the_reference_is_the_policy_the_stage_started_from_and_leaves_the_trained_one_in_place(fresh_lora, kind):
    """After RWML the reference is the RWML adapter (swapped in for the pass), under full fine-tuning a frozen copy
    of the starting model: either way its log-probs are the start's, and the trained weights stay as trained."""
    model, tokenizer = fresh_lora
    with torch.no_grad():  # the adapter the stage starts from
        for n, q in model.named_parameters():
            if "lora_B" in n:
                q.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    prompt = agent_messages(ROLE, GOAL, [], "You are in the kitchen.", ["look around"], 1)
    batch = encode_turns(tokenizer, [Turn(prompt, "<action>look around</action>", False, 1.0)])
    with torch.no_grad():
        at_start = reply_logps(model, batch, 1.0)
    reference = Reference(model, from_base_lora=False, full_model=kind == "whole-model copy")
    with torch.no_grad():  # training moves the adapter
        for n, q in model.named_parameters():
            if "lora_B" in n:
                q.add_(0.1)
        trained = {n: q.detach().clone() for n, q in model.named_parameters() if q.requires_grad}
        moved = reply_logps(model, batch, 1.0)
        with reference.policy() as policy:
            torch.testing.assert_close(reply_logps(policy, batch, 1.0), at_start)
    assert not torch.allclose(moved, at_start)
    assert all(torch.equal(q, trained[n]) for n, q in model.named_parameters() if q.requires_grad)


def test_the_policy_trains_the_token_ids_it_sampled_not_a_re_encoding_of_their_text(tiny_policy, tmp_path):
    model, tokenizer = tiny_policy
    prompt = agent_messages(ROLE, GOAL, [], "You are in the kitchen.", ["look around", "inventory"], 1)
    # the hf sampler returns its ids, which decode to its text
    torch.manual_seed(0)
    [[reply]] = generator_over(model, tokenizer).generate([prompt], 1, Sampling(1.0, 12))
    assert reply.token_ids and tokenizer.decode(reply.token_ids, skip_special_tokens=True) == reply
    # "look" sampled as "lo" + "ok": the text re-encodes to another split, the sampled one is trained
    split = [tokenizer.convert_tokens_to_ids(piece) for piece in ("lo", "ok")]
    assert tokenizer.unk_token_id not in split and tokenizer("look", add_special_tokens=False)["input_ids"] != split
    turn = Turn(prompt, "look", truncated=False, advantage=1.0, completion_ids=(*split, tokenizer.eos_token_id))
    batch = encode_turns(tokenizer, [turn])
    trained = batch["input_ids"][0, -batch["completion_mask"].shape[1] :][batch["completion_mask"][0] == 1]
    assert trained.tolist() == split + [tokenizer.eos_token_id]
    # and the rollout keeps them for the policy stage
    episodes = run_episodes(
        tmp_path / "step.jsonl",
        group_specs(["train-0"], "train", 1, step=1, seed=0),
        Play(SETTINGS, generator_over(model, tokenizer), Sampling(1.0, 12), AgentSettings(history=1), 1, "one turn"),
        keep_prompts=True,
    )
    [step] = episodes[0].steps
    assert step.completion_ids and tokenizer.decode(step.completion_ids, skip_special_tokens=True) == step.completion


def test_the_hf_sampler_samples_the_plain_softmax_whatever_the_generation_config_says(tiny_qwen3):
    """Qwen2.5-7B-Instruct's generation config asks top_k 20 and repetition penalty 1.05: left alone,
    transformers' generate applies them; ours passes neutral values, leaving temperature and top_p."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TopKLogitsWarper,
    )

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3)
    model.generation_config.update(top_k=20, repetition_penalty=1.05, min_p=0.05, do_sample=True)
    applied = []
    build = model._get_logits_processor
    model._get_logits_processor = lambda *a, **k: applied.append(build(*a, **k)) or applied[-1]
    prompt = agent_messages(ROLE, GOAL, [], "You are in the kitchen.", ["look around"], 1)
    generator_over(model, tokenizer).generate([prompt], 1, Sampling(0.7, 4))
    kinds = {type(p) for p in applied[-1]}
    assert not kinds & {TopKLogitsWarper, RepetitionPenaltyLogitsProcessor, MinPLogitsWarper}
    enc = tokenizer("Hello", return_tensors="pt")
    model.generate(**enc, max_new_tokens=2, do_sample=True, temperature=0.7)  # the model's own defaults
    assert {TopKLogitsWarper, RepetitionPenaltyLogitsProcessor, MinPLogitsWarper} <= {type(p) for p in applied[-1]}


def generator_over(model, tokenizer) -> HFGenerator:
    return HFGenerator(model, tokenizer, batch_size=4)


def test_one_update_moves_the_lora_and_leaves_the_base_frozen(fresh_lora, tmp_path):
    model, tokenizer = fresh_lora
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
    reference = Reference(model, from_base_lora=True)
    metrics = _update(model, tokenizer, optimizer, scheduler, episodes, recipe, torch.device("cpu"), 1, reference)
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


@pytest.mark.slow
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
