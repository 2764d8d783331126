"""The policy stage: task-success RL in the environment, from the base model or a trained adapter.

Each optimizer step plays G episodes of each of B training tasks with the current LoRA (one
generate call serves every live episode, the environments step in the `EnvPool` that collect
uses), scores them by task success, and takes one gradient step on every agent turn with its
episode's group-normalised advantage (`train/turns.py`).

Why a loop of ours on PEFT, torch and TRL's log-prob helper rather than TRL's `GRPOTrainer`: the
agent sees a fresh prompt at every turn (task, the last H steps, the observation, the choices), so
one episode is many (prompt, reply) pairs whose number varies from episode to episode. TRL's
trainer, `rollout_func` included, wants exactly `num_generations` sequences per prompt and learns
a multi-turn episode as one growing conversation, which is another prompt than the one the agent
is evaluated with; Unsloth also rewrites that trainer's source on a GPU. The per-turn update of
verl-agent fits in the functions below, the same on both backends.

With `model.server` the step's episodes are sampled on the vLLM server, from the LoRA of that step
loaded there by path. Under `accelerate launch` each process plays and back-propagates a share, and
the gradients are summed (`_update`).

A checkpoint (adapter, optimizer, scheduler, step) is written every `policy.save_steps`; a rerun
resumes from the last one. The episodes of each step are kept in `policy_rollouts/step-N.jsonl`:
those of the step after the checkpoint were sampled by the checkpointed policy and are reused,
later ones are set aside.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import random
import statistics
import time
from pathlib import Path

import torch

from rwml_lite.config import Recipe
from rwml_lite.distributed import deal, dealt, is_main, seed_sampling, sum_over_processes
from rwml_lite.envs import list_tasks
from rwml_lite.envs.pool import EnvPool
from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling, backend, user_simulators
from rwml_lite.records import JsonlAppender, iter_jsonl
from rwml_lite.rollout import EpisodeSpec, Play, progress_display, run_episodes
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import EpisodeRecord
from rwml_lite.train.common import ServedLoRA, save_adapter
from rwml_lite.train.policy_checkpoints import resume, save_checkpoint
from rwml_lite.train.turns import (
    Turn,
    completion_tokens,
    encode_turns,
    episode_return,
    reply_logps,
    step_turns,
    turn_loss,
)


def step_tasks(tasks: list[str], step: int, per_step: int, seed: int) -> list[str]:
    """The B distinct tasks of optimizer step `step` (1-based): the next B places of seeded
    permutations of the task list laid end to end, one permutation per pass, skipping a task already
    drawn for this step where a slice runs into the next pass. Every task comes up once per pass,
    and a resumed run plays the same tasks."""
    chosen: list[str] = []
    position = (step - 1) * per_step
    while len(chosen) < per_step:
        epoch, index = divmod(position, len(tasks))
        order = list(tasks)
        random.Random(seed * 7919 + epoch).shuffle(order)
        if order[index] not in chosen:
            chosen.append(order[index])
        position += 1
    return chosen


def group_specs(tasks: list[str], split: str, group_size: int, step: int, seed: int) -> list[EpisodeSpec]:
    """G episodes per task, all with the same environment seed inside a group."""
    return [
        EpisodeSpec(f"{task}#{g}", task, split, g, seed * 1_000_003 + step * len(tasks) + i)
        for i, task in enumerate(tasks)
        for g in range(group_size)
    ]


def train_policy(recipe: Recipe, folder: RunFolder) -> Path:
    """Train the policy stage's LoRA, resuming from its last checkpoint; returns the final adapter."""
    p = recipe.policy
    tasks = list_tasks(recipe.env, p.split, p.num_tasks or 10**9)
    if p.tasks_per_step > len(tasks):
        raise RwmlError(
            f"policy.tasks_per_step={p.tasks_per_step} is more than the {len(tasks)} tasks of split {p.split!r} "
            f"(policy.num_tasks={p.num_tasks}); lower policy.tasks_per_step or raise policy.num_tasks."
        )
    start = None if p.start == "base" else folder.adapter(p.start)
    if start is not None and not start.exists():
        raise RwmlError(f"policy.start={p.start!r} but {start} does not exist: run the {p.start} stage first.")
    models = backend(recipe.model)
    model, tokenizer = models.policy_model(recipe.model, recipe.seed, start)
    device = next(q for q in model.parameters() if q.requires_grad).device
    optimizer = _optimizer(recipe, [q for q in model.parameters() if q.requires_grad])
    scheduler = _scheduler(optimizer, p)
    lora = recipe.model.lora is not None
    reference = Reference(model, start is None and lora, full_model=not lora) if p.beta > 0 else None
    done = resume(folder, model, optimizer, scheduler)
    # with a server the step's LoRA is sampled there, else the model being trained is sampled here
    served = ServedLoRA(recipe.model, folder.checkpoints("policy") / "live") if recipe.model.server else None
    generator = None if served else models.live_generator(model, tokenizer, recipe.model)
    users = user_simulators(recipe, "policy")
    sampling = Sampling(p.temperature, recipe.agent.max_new_tokens)
    log = _Log(recipe, folder)
    with EnvPool(recipe.env, p.episode_max_steps, users=users) as pool, _progress(p.max_steps, done) as bar:
        task = bar.task_ids[0]
        for step in range(done + 1, p.max_steps + 1):
            started = time.monotonic()
            if served:
                generator = served.refresh(model)
            seed_sampling(recipe.seed * 100_003 + step)  # the step's samples, the same after a resume
            specs = group_specs(step_tasks(tasks, step, p.tasks_per_step, recipe.seed), p.split, p.group_size, step,
                                recipe.seed)  # fmt: skip
            play = Play(recipe.env, generator, sampling, recipe.agent, p.episode_max_steps, f"  step {step} episodes")
            episodes = run_episodes(
                folder.policy_rollouts(step), specs, play, keep_prompts=True, pool=pool, progress=bar
            )
            rolled = time.monotonic()
            models.to_training(model)
            metrics = _update(model, tokenizer, optimizer, scheduler, episodes, recipe, device, step, reference)
            metrics.update(step=step, rollout_time=rolled - started, step_time=time.monotonic() - started)
            log.write(metrics)
            bar.update(task, completed=step, info=log.summary())
            if (step % p.save_steps == 0 or step == p.max_steps) and is_main():
                save_checkpoint(folder, step, model, optimizer, scheduler)
    log.close()
    if served:
        served.close()
    return save_adapter(model.save_pretrained, folder.adapter("policy"), every_process=False)


def _update(
    model,
    tokenizer,
    optimizer,
    scheduler,
    episodes: list[EpisodeRecord],
    recipe: Recipe,
    device,
    step: int = 1,
    reference: Reference | None = None,
) -> dict:
    """The step's updates on every turn of its episodes; returns the step's metrics. The turns are shuffled
    (seeded by the step) into mini batches of policy.mini_batch_size, each one clipped update against the
    log-probs taken before the first (one mini batch: one update, ratio 1). Under accelerate every process holds
    all the episodes and back-propagates its share of each mini batch; the gradients summed over the processes
    are the one-process gradient (the loss divides by the mini batch's reply tokens of all processes), and each
    process takes the same update. The learning-rate schedule advances once per step, as verl's does."""
    p = recipe.policy
    turns, zero_std = step_turns(episodes, p.invalid_action_penalty, p.scale_rewards == "group", p.group_stats)
    random.Random(recipe.seed * 1_000_033 + step).shuffle(turns)
    size = p.mini_batch_size or max(len(turns), 1)
    minis = [turns[i : i + size] for i in range(0, len(turns), size)]
    # turns of a group that did equally well have advantage 0: without a KL term they add nothing but to the
    # normaliser
    trains = (lambda t: True) if p.beta > 0 else (lambda t: t.advantage != 0.0)
    autocast = _autocast(recipe, device)
    if len(minis) > 1 or p.beta > 0:
        minis = _with_logps(model, tokenizer, minis, trains, recipe, device, reference, autocast)
    params = [q for q in model.parameters() if q.requires_grad]
    totals = {"loss": 0.0, "clipped": 0.0, "kl": 0.0, "grad_norm": 0.0, "updates": 0}
    model.train()
    for mini in minis:
        trained = sorted((t for t in mini if trains(t)), key=lambda t: len(str(t.prompt)) + len(t.completion))
        if trained:
            update = _mini_update(model, tokenizer, optimizer, params, mini, trained, p, device, autocast)
            totals = {k: totals[k] + update[k] for k in totals}
    scheduler.step()
    updates = max(totals["updates"], 1)
    steps = [s for ep in episodes for s in ep.steps]
    return {
        "success": 100.0 * statistics.fmean(ep.won for ep in episodes),
        "reward": statistics.fmean(episode_return(ep, p.invalid_action_penalty) for ep in episodes),
        "invalid_rate": 100.0 * sum(not s.valid for s in steps) / max(len(steps), 1),
        "episode_length": len(steps) / len(episodes),
        "zero_std_groups": zero_std / len({ep.task_id for ep in episodes}),
        "turns": len(turns),
        "turns_trained": sum(trains(t) for t in turns),
        "updates": totals["updates"],
        "loss": totals["loss"] / updates,
        "grad_norm": totals["grad_norm"] / updates,
        "clip_fraction": totals["clipped"] / updates,
        "kl": totals["kl"] / updates,
        "learning_rate": scheduler.get_last_lr()[0],
    }


def _mini_update(model, tokenizer, optimizer, params, mini, trained, p, device, autocast) -> dict:
    """One clipped update on a mini batch's trained turns (this process's share of them), normalised by the reply
    tokens of the whole mini batch; returns its loss, clip and KL shares, and gradient norm."""
    normalizer = max(completion_tokens(tokenizer, mini), 1)
    loss = torch.zeros((), device=device)
    counts = torch.zeros(2, device=device)
    mine = deal(trained)
    for i in range(0, len(mine), p.micro_batch_size):
        batch = encode_turns(tokenizer, mine[i : i + p.micro_batch_size], device)
        with autocast:
            micro, stats = turn_loss(reply_logps(model, batch, p.temperature), batch, normalizer, p.epsilon, p.beta)
        micro.backward()
        loss += micro.detach().float()
        counts += torch.tensor([stats["clipped"], stats["kl"]], device=device)
    for q in params:  # a process whose share was empty adds zeros
        if q.grad is None:
            q.grad = torch.zeros_like(q)
    sum_over_processes([q.grad for q in params] + [loss, counts])
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, p.max_grad_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"loss": loss.item(), "clipped": counts[0].item() / normalizer, "kl": counts[1].item() / normalizer,
            "grad_norm": grad_norm, "updates": 1}  # fmt: skip


def _with_logps(model, tokenizer, minis, trains, recipe: Recipe, device, reference, autocast) -> list[list[Turn]]:
    """The mini batches' trained turns with the log-probs of their reply tokens under the reference (beta > 0)
    and, in every mini batch after the first, under the policy that sampled them (taken before any update; the
    first update's policy is that one still, its ratio is 1 exactly), each process computing a share."""
    p = recipe.policy

    def logps(turns: list[Turn], policy=model) -> list[tuple[float, ...]]:
        out = []
        with torch.no_grad(), autocast:
            for i in range(0, len(turns), p.micro_batch_size):
                batch = encode_turns(tokenizer, turns[i : i + p.micro_batch_size], device)
                rows = reply_logps(policy, batch, p.temperature).cpu()
                out += [
                    tuple(r[r.shape[0] - n :].tolist())
                    for r, n in zip(rows, batch["completion_mask"].sum(1).int().tolist())
                ]
        return out

    trained = [(k, t) for k, mini in enumerate(minis) for t in mini if trains(t)]
    found: dict[str, dict[int, tuple]] = {}
    later = [i for i, (k, _) in enumerate(trained) if k > 0]
    if later:
        found["old_logps"] = dict(zip(later, dealt(logps, [trained[i][1] for i in later])))
    if p.beta > 0:
        with reference.policy() as policy:
            found["ref_logps"] = dict(enumerate(dealt(lambda turns: logps(turns, policy), [t for _, t in trained])))
    out = [[t for t in mini if not trains(t)] for mini in minis]
    for i, (k, t) in enumerate(trained):
        out[k].append(dataclasses.replace(t, **{name: values[i] for name, values in found.items() if i in values}))
    return out


class Reference:
    """The policy the stage starts from, for the KL term (verl-agent's reference is the actor at the start of RL,
    so a policy stage after RWML is held near the RWML model, not pulled back to the base): the base model with
    the adapter switched off when the stage starts from the base with a fresh LoRA; the starting adapter's
    weights, copied before any update or resume and swapped in for the pass; under full fine-tuning a frozen
    copy of the whole model (bf16 on a GPU, as verl keeps its reference model), run beside it."""

    def __init__(self, model, from_base_lora: bool, full_model: bool = False):
        self.model, self.copy, self.saved = model, None, None
        self.params = [q for q in model.parameters() if q.requires_grad]
        if full_model:
            dtype = torch.bfloat16 if self.params[0].is_cuda else self.params[0].dtype
            self.copy = copy.deepcopy(model).to(dtype).eval().requires_grad_(False)
        elif not from_base_lora:
            self.saved = [q.detach().clone() for q in self.params]

    @contextlib.contextmanager
    def policy(self):
        """The reference, as a model to run without gradient."""
        if self.copy is not None:
            yield self.copy
        elif self.saved is None:
            with self.model.disable_adapter():
                yield self.model
        else:
            with torch.no_grad():
                current = [q.detach().clone() for q in self.params]
                for q, saved in zip(self.params, self.saved):
                    q.copy_(saved)
            try:
                yield self.model
            finally:
                with torch.no_grad():
                    for q, now in zip(self.params, current):
                        q.copy_(now)


def _autocast(recipe: Recipe, device):
    """bf16/fp16 autocast on a GPU as the trainers' mixed precision; none on the CPU."""
    from rwml_lite.train.common import trainer_args

    args = trainer_args(recipe)
    if device.type != "cuda" or not (args["bf16"] or args["fp16"]):
        return torch.autocast("cpu", enabled=False)
    return torch.autocast("cuda", dtype=torch.bfloat16 if args["bf16"] else torch.float16)


def _scheduler(optimizer, p) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' warmup then constant or linear-to-0 schedule over policy.max_steps, stepped once per step."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup = round(p.warmup_ratio * p.max_steps)
    if p.lr_schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, p.max_steps)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def _optimizer(recipe: Recipe, params: list) -> torch.optim.Optimizer:
    p = recipe.policy
    if recipe.model.optimizer == "adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=p.learning_rate, weight_decay=p.weight_decay)
    return torch.optim.AdamW(params, lr=p.learning_rate, weight_decay=p.weight_decay)


# ---------------------------------------------------------------- metrics and progress


class _Log:
    """Every step's metrics to metrics/policy.jsonl and TensorBoard (or wandb), and the running
    numbers of the progress line."""

    def __init__(self, recipe: Recipe, folder: RunFolder):
        self.recent: list[dict] = []
        self.out = self.writer = self.wandb = None
        if not is_main():  # the others hold the same numbers
            return
        self.out = JsonlAppender(folder.metrics("policy"))
        if recipe.run.report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(folder.tensorboard("policy")))
        elif recipe.run.report_to == "wandb":
            import wandb

            run_id = hashlib.sha1(str(folder.root.resolve()).encode()).hexdigest()[:12] + "-policy"
            self.wandb = wandb.init(project="rwml-lite", name=f"{folder.root.name}/policy", id=run_id, resume="allow")

    def write(self, metrics: dict) -> None:
        if self.out is not None:
            self.out.append(metrics)
        self.recent = (self.recent + [metrics])[-10:]
        step = metrics["step"]
        for name, value in metrics.items():
            if name != "step" and self.writer is not None:
                self.writer.add_scalar(f"policy/{name}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"policy/{k}": v for k, v in metrics.items() if k != "step"}, step=step)

    def summary(self) -> str:
        """Success, reward and invalid rate over the last (up to) 10 steps, and the last step's time."""
        mean = lambda key: statistics.fmean(m[key] for m in self.recent)  # noqa: E731
        return (
            f"success {mean('success'):.1f}% reward {mean('reward'):.3g} invalid {mean('invalid_rate'):.0f}% "
            f"(last {len(self.recent)}) {self.recent[-1]['step_time']:.0f} s/step"
        )

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_policy_metrics(path: Path) -> list[dict]:
    """The logged steps in order, the last record of a step winning (a resumed run logs a step again
    when it replays the steps after its last checkpoint)."""
    by_step = {m["step"]: m for m in iter_jsonl(path)} if path.exists() else {}
    return [by_step[s] for s in sorted(by_step)]


def _progress(total: int, done: int):
    progress = progress_display()
    progress.add_task("[bold]policy[/bold]", total=total, completed=done, info="")
    return progress
