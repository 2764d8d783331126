"""RWML: GRPO (TRL GRPOTrainer) on the target model with the sim-to-real next-state reward.

One optimizer step = `batch_size` prompts x `group_size` completions, accumulated in micro
batches; checkpoints (adapter, optimizer, scheduler, trainer state) every `save_steps` are what
a rerun resumes from.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers.trainer_utils import get_last_checkpoint
from trl import GRPOConfig, GRPOTrainer

from rwml_lite.config import Recipe
from rwml_lite.runfolder import RunFolder
from rwml_lite.models import backend, check_lengths
from rwml_lite.models.hf import render_prompt
from rwml_lite.reward import NextStateReward
from rwml_lite.train.common import logging_callbacks, save_adapter, trainer_args


def train_rwml(recipe: Recipe, triplets: list[dict], reward: NextStateReward, folder: RunFolder) -> Path:
    """Train the LoRA adapter, resuming from the last checkpoint; returns the final adapter folder."""
    g, prefill = recipe.grpo, recipe.worldmodel.prefill
    policy = backend(recipe.model)
    model, tokenizer, peft_config = policy.trainable_policy(recipe.model)
    rows = [
        {"prompt": render_prompt(tokenizer, t["prompt"], prefill), "real_next_state": t["next_observation"], "kind": t.get("kind", "observation")}
        for t in triplets
    ]
    check_lengths(recipe.model, tokenizer, [r["prompt"] for r in rows], g.max_completion_length, "RWML prompt")
    completions_per_step = g.batch_size * g.group_size
    args = GRPOConfig(
        output_dir=str(folder.checkpoints("rwml")),
        num_generations=g.group_size,
        per_device_train_batch_size=g.micro_batch_size,
        gradient_accumulation_steps=completions_per_step // g.micro_batch_size,
        learning_rate=g.learning_rate,
        num_train_epochs=g.epochs,
        max_steps=g.max_steps,
        max_completion_length=g.max_completion_length,
        temperature=g.temperature,
        beta=g.beta,
        loss_type=g.loss_type,
        epsilon=g.epsilon,
        logging_steps=g.logging_steps,
        save_strategy="steps",
        save_steps=g.save_steps,
        save_total_limit=2,
        **policy.training_overrides(recipe.model),
        **trainer_args(recipe),
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=logging_callbacks(recipe.run, folder.tensorboard("rwml"), folder.metrics("rwml")),
    )
    checkpoints = folder.checkpoints("rwml")
    trainer.train(resume_from_checkpoint=get_last_checkpoint(str(checkpoints)) if checkpoints.exists() else None)
    return save_adapter(trainer, folder.adapter("rwml"))
