"""Supervised next-state training (TRL SFTTrainer + LoRA): the too-easy filter model.

The data is prompt/completion text: the RWML prompt rendered with the chat template (plus the
recipe's prefill) and the WM-SFT target `<think> </think><next_state>{real}</next_state>`, so
only the completion is learned.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from rwml_lite.config import Recipe
from rwml_lite.runfolder import RunFolder
from rwml_lite.models import backend, check_lengths
from rwml_lite.models.hf import render_prompt
from rwml_lite.train.common import logging_callbacks, save_adapter, trainer_args


def train_next_state_sft(recipe: Recipe, triplets: list[dict], folder: RunFolder) -> Path:
    """Train a LoRA on the triplets' WM-SFT targets; returns the saved adapter's folder."""
    f, prefill = recipe.worldmodel.filter, recipe.worldmodel.prefill
    policy = backend(recipe.model)
    model, tokenizer, peft_config = policy.trainable_policy(recipe.model)
    rows = [
        {"prompt": render_prompt(tokenizer, t["prompt"], prefill), "completion": t["target"].removeprefix(prefill)}
        for t in triplets
    ]
    check_lengths(recipe.model, tokenizer, [r["prompt"] + r["completion"] for r in rows], 0, "filter SFT example", every_backend=True)
    args = SFTConfig(
        output_dir=str(folder.checkpoints("filter")),
        num_train_epochs=f.epochs,
        learning_rate=f.learning_rate,
        per_device_train_batch_size=f.batch_size,
        max_length=recipe.model.max_seq_length,  # TRL's default (1024) would cut long prompts' targets off
        logging_steps=1,
        save_strategy="no",
        **policy.training_overrides(recipe.model),
        **trainer_args(recipe),
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=logging_callbacks(recipe.run, folder.tensorboard("filter"), folder.metrics("filter")),
    )
    trainer.train()
    return save_adapter(trainer, folder.adapter("filter"))
