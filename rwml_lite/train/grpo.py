"""RWML: GRPO (TRL GRPOTrainer) on the target model with the sim-to-real next-state reward.

One optimizer step = `batch_size` prompts x `group_size` completions, accumulated in micro
batches; checkpoints (adapter, optimizer, scheduler, trainer state) every `save_steps` are what
a rerun resumes from.

GRPO learns only from groups whose rewards differ: a group of all misses (or all hits) has zero
advantage everywhere. Each step therefore logs its signal share (groups with differing rewards),
hit rate at tau_d, tag rate and share of completions cut at the token budget, and a run whose signal
share stays low is warned once, with the fields that would change it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import RepeatSampler

from rwml_lite.config import GrpoSettings, Recipe
from rwml_lite.distributed import world
from rwml_lite.models import backend, check_lengths
from rwml_lite.models.hf import render_prompt
from rwml_lite.records import JsonlAppender
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import TripletRecord
from rwml_lite.train.common import (
    ServedLoRA,
    build_trainer,
    free_memory,
    logging_callbacks,
    save_adapter,
    trainer_args,
)

#: GRPOConfig argument -> the recipe field it comes from (checked after the config is built).
GRPO_FIELDS = {
    "num_generations": "grpo.group_size",
    "per_device_train_batch_size": "grpo.micro_batch_size",
    "learning_rate": "grpo.learning_rate",
    "weight_decay": "grpo.weight_decay",
    "warmup_steps": "grpo.warmup_ratio",
    "lr_scheduler_type": "grpo.lr_schedule",
    "max_completion_length": "grpo.max_completion_length",
    "temperature": "grpo.temperature",
    "beta": "grpo.beta",
    "loss_type": "grpo.loss_type",
    "scale_rewards": "grpo.scale_rewards",
    "epsilon": "grpo.epsilon",
    "epsilon_high": "grpo.epsilon_high",
    "mask_truncated_completions": "grpo.mask_truncated_completions",
    "vllm_importance_sampling_correction": "grpo.importance_sampling_correction",
    "seed": "seed",
}  # model.optimizer is passed but not checked: Unsloth's CPU fallback swaps GPU-only optimizers for AdamW


def grpo_arguments(recipe: Recipe, folder: RunFolder) -> dict:
    """Every GRPOConfig argument of an RWML run, the same on both backends but for the
    backend's own `training_overrides` (UNSLOTH_DEFAULTED and UNSLOTH_GRPO_DEFAULTED among them)."""
    g = recipe.grpo
    completions_per_step = g.batch_size * g.group_size
    return {
        "output_dir": str(folder.checkpoints("rwml")),
        "num_generations": g.group_size,
        "per_device_train_batch_size": g.micro_batch_size,
        # each of the processes computes its share of a step's completions (the recipe checks they divide)
        "gradient_accumulation_steps": completions_per_step // (g.micro_batch_size * world()),
        "learning_rate": g.learning_rate,
        "weight_decay": g.weight_decay,
        "warmup_steps": g.warmup_ratio,  # transformers 5: a value below 1 is the share of steps
        "lr_scheduler_type": g.lr_schedule,
        "num_train_epochs": g.epochs,
        "max_steps": g.max_steps,
        "max_completion_length": g.max_completion_length,
        "temperature": g.temperature,
        "beta": g.beta,
        "loss_type": g.loss_type,
        "scale_rewards": g.scale_rewards,
        "epsilon": g.epsilon,
        "epsilon_high": g.epsilon if g.epsilon_high is None else g.epsilon_high,
        "mask_truncated_completions": g.mask_truncated_completions,
        "vllm_importance_sampling_correction": g.importance_sampling_correction,
        "logging_steps": g.logging_steps,
        "save_strategy": "steps",
        "save_steps": g.save_steps,
        "save_total_limit": 2,
        **backend(recipe.model).training_overrides(recipe.model),
        **trainer_args(recipe),
    }


def train_rwml(recipe: Recipe, triplets: list[TripletRecord], reward, folder: RunFolder) -> Path:
    """Train the LoRA adapter, resuming from the last checkpoint; returns the final adapter folder.
    `reward`: a TRL reward function, NextStateReward or (the ablation) JudgeReward."""
    g, prefill = recipe.grpo, recipe.worldmodel.prefill
    model, tokenizer, peft_config = backend(recipe.model).trainable_policy(recipe.model, recipe.seed)
    rows = [
        {
            "prompt": render_prompt(tokenizer, t.prompt, prefill),
            "real_next_state": t.next_observation,
            "measure": t.measure,
            "observation": t.observation,  # what an LLM judge reward sees beside the prediction
            "action": t.action,
        }
        for t in triplets
    ]
    check_lengths(recipe.model, tokenizer, [r["prompt"] for r in rows], g.max_completion_length, "RWML prompt")
    served = {"rollout_func": ServedRollouts(recipe, folder)} if recipe.model.server else {}
    trainer = build_trainer(
        GRPOTrainer,
        GRPOConfig,
        grpo_arguments(recipe, folder),
        GRPO_FIELDS,
        model=model,
        reward_funcs=[reward],
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=logging_callbacks(recipe.run, folder.tensorboard("rwml"), folder.metrics("rwml")),
        **served,
    )
    # first of all callbacks (W&B's comes before ours), so that every logger sees the signal share it adds
    trainer.callback_handler.callbacks.insert(0, SignalMonitor(g, folder.metrics("rwml")))
    trl_sampler = trainer._get_train_sampler
    trainer._get_train_sampler = lambda *args: EpochSeededSampler.of(trl_sampler(*args))
    checkpoints = folder.checkpoints("rwml")
    trainer.train(resume_from_checkpoint=get_last_checkpoint(str(checkpoints)) if checkpoints.exists() else None)
    if served:
        served["rollout_func"].lora.close()
    adapter = save_adapter(trainer.save_model, folder.adapter("rwml"))
    del trainer, model
    free_memory()
    return adapter


class EpochSeededSampler(RepeatSampler):
    """TRL's GRPO sampler, whose shuffle of epoch e is the same whether the run got there or resumed there.
    TRL's draws each epoch's order from one generator seeded once, and a resumed run builds a new one: resumed
    in epoch e >= 1, it trained epoch e in epoch 0's order. transformers calls set_epoch(e) before each
    epoch (a resumed run too), and set_epoch replays the generator's first e shuffles, as a run that got there
    drew them."""

    @classmethod
    def of(cls, sampler):
        if type(sampler) is not RepeatSampler:  # another trainer's own sampler: left as it is
            return sampler
        s = sampler
        return cls(s.data_source, s.mini_repeat_count, s.batch_size, s.repeat_count, s.shuffle, s.seed)

    def set_epoch(self, epoch: int) -> None:
        if self.shuffle and self.seed is not None:
            self.generator.manual_seed(self.seed)
            for _ in range(epoch):
                torch.randperm(self.num_samples, generator=self.generator)


class SignalMonitor(TrainerCallback):
    """Adds each step's `signal_share` (1 - TRL's frac_reward_zero_std) to its logs, and warns once, on the
    console and as a `signal_warning` line in the metrics file (the report shows it), when the share averages
    under grpo.min_signal_share over grpo.signal_window logged steps. Which fields to change is read off the
    window's hit, tag and cut rates."""

    def __init__(self, settings: GrpoSettings, metrics: Path):
        self.settings, self.metrics, self.window, self.warned = settings, metrics, [], False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "frac_reward_zero_std" not in logs:
            return
        logs["signal_share"] = 1.0 - logs["frac_reward_zero_std"]
        self.window = [*self.window, dict(logs)][-self.settings.signal_window :]
        if self.warned or len(self.window) < self.settings.signal_window:
            return
        if statistics.fmean(m["signal_share"] for m in self.window) >= self.settings.min_signal_share:
            return
        self.warned = True
        warning = signal_warning(self.window, self.settings)
        if state.is_world_process_zero:
            from rich.console import Console

            Console(stderr=True).print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
            with JsonlAppender(self.metrics) as out:
                out.append({"step": state.global_step, "signal_warning": warning})


def signal_warning(window: list[dict], settings: GrpoSettings) -> str:
    """What a user reads when GRPO's groups stop carrying gradient, naming the fields to change, from the mean
    rates of the steps in `window`."""

    def mean(key: str) -> float | None:
        values = [m[key] for m in window if key in m]
        return statistics.fmean(values) if values else None

    share, hits, tags, cut = (mean(k) for k in ("signal_share", "hit_rate", "tag_rate", "completions/clipped_ratio"))
    causes = []
    if tags is not None and tags < 0.5:
        causes.append(
            f"only {100 * tags:.0f} % of the predictions hold a closed <next_state> tag (the others score 0): set "
            "worldmodel.prefill (e.g. '<think> </think><next_state>') so that every answer opens it"
            + (f", and raise grpo.max_completion_length={settings.max_completion_length}, at which "
               f"{100 * cut:.0f} % were cut" if cut and cut > 0.25 else "")
        )  # fmt: skip
    if hits is not None and hits < 0.05:
        causes.append(f"{100 * hits:.0f} % of the predictions hit: reward.tau_d is strict for this embedder (try auto)")
    elif hits is not None and hits > 0.9:
        causes.append(f"{100 * hits:.0f} % of the predictions hit: reward.tau_d is loose for this embedder (try auto)")
    elif hits is not None and not causes:
        causes.append(
            f"{100 * hits:.0f} % of the predictions hit, but in groups that all hit or all miss: each triplet is one the "
            "model always or never predicts within reward.tau_d; the too-easy filter (worldmodel.filter) drops the "
            "first kind, and a larger grpo.group_size gives the second more tries"
        )
    return (
        f"RWML: only {100 * share:.0f} % of GRPO's groups saw rewards that differ over the last {settings.signal_window} "
        f"logged steps (grpo.min_signal_share={settings.min_signal_share}); a group whose rewards are all equal carries "
        "no gradient. " + ("; ".join(causes) if causes else "Change reward.tau_d, grpo.max_completion_length or "
                            "worldmodel.prefill") + "."
    )  # fmt: skip


def signal_summary(logs: list[dict]) -> dict:
    """The RWML stage's summary: steps, reward at the first and last step, mean signal share, the last hit
    rate, and the signal warning if one was given."""
    steps = logged_steps(logs)
    warning = next((m["signal_warning"] for m in logs if "signal_warning" in m), None)
    if not steps:
        return {"steps": 0}
    shares = [m["signal_share"] for m in steps if "signal_share" in m]
    return {
        "steps": steps[-1]["step"],
        "first_reward": steps[0]["reward"],
        "final_reward": steps[-1]["reward"],
        **({"signal_share": statistics.fmean(shares)} if shares else {}),
        **({"hit_rate": steps[-1]["hit_rate"]} if "hit_rate" in steps[-1] else {}),
        **({"warning": warning} if warning else {}),
    }


def logged_steps(logs: list[dict]) -> list[dict]:
    """The GRPO steps of a metrics file, one record per step: the last, where a resumed run logged a step again."""
    return list({m["step"]: m for m in logs if "reward" in m}.values())


class ServedRollouts:
    """TRL's `rollout_func` for GRPO with `model.server`: the groups are sampled on the vLLM server, from
    the LoRA of the current optimizer step (`ServedLoRA`, in checkpoints/rwml/live/)."""

    def __init__(self, recipe: Recipe, folder: RunFolder):
        self.recipe, self.lora, self.step = recipe, ServedLoRA(recipe.model, folder.checkpoints("rwml") / "live"), None

    def __call__(self, prompts: list[str], trainer) -> dict[str, list]:
        from rwml_lite.models import Sampling

        if trainer.state.global_step != self.step:
            self.lora.refresh(trainer.model)
            self.step = trainer.state.global_step
        g = self.recipe.grpo
        return self.lora.generator.sampled_tokens(prompts, Sampling(g.temperature, g.max_completion_length))
