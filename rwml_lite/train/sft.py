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
from rwml_lite.models import backend, check_lengths
from rwml_lite.models.hf import render_prompt
from rwml_lite.runfolder import RunFolder
from rwml_lite.train.common import build_trainer, logging_callbacks, save_adapter, trainer_args

#: SFTConfig argument -> the recipe field it comes from (checked after the config is built).
SFT_FIELDS = {
    "learning_rate": "worldmodel.filter.learning_rate",
    "weight_decay": "worldmodel.filter.weight_decay",
    "warmup_steps": "worldmodel.filter.warmup_ratio",
    "per_device_train_batch_size": "worldmodel.filter.batch_size",
    "num_train_epochs": "worldmodel.filter.epochs",
    "seed": "seed",
}  # model.optimizer is passed but not checked: Unsloth's CPU fallback swaps GPU-only optimizers for AdamW


def sft_arguments(recipe: Recipe, folder: RunFolder) -> dict:
    """Every SFTConfig argument of the filter model, the same on both backends but for the
    backend's own `training_overrides` (UNSLOTH_DEFAULTED among them)."""
    f = recipe.worldmodel.filter
    return {
        "output_dir": str(folder.checkpoints("filter")),
        "num_train_epochs": f.epochs,
        "learning_rate": f.learning_rate,
        "weight_decay": f.weight_decay,
        "warmup_steps": f.warmup_ratio,  # transformers 5: a value below 1 is the share of steps
        "per_device_train_batch_size": f.batch_size,
        "gradient_accumulation_steps": 1,
        "max_length": recipe.model.max_seq_length,  # TRL's default (1024) would cut long prompts' targets off
        "logging_steps": 1,
        "save_strategy": "no",
        **backend(recipe.model).training_overrides(recipe.model),
        **trainer_args(recipe),
    }


def train_next_state_sft(recipe: Recipe, triplets: list[dict], folder: RunFolder) -> Path:
    """Train a LoRA on the triplets' WM-SFT targets; returns the saved adapter's folder."""
    prefill = recipe.worldmodel.prefill
    model, tokenizer, peft_config = backend(recipe.model).trainable_policy(recipe.model, recipe.seed)
    rows = [
        {"prompt": render_prompt(tokenizer, t["prompt"], prefill), "completion": t["target"].removeprefix(prefill)}
        for t in triplets
    ]
    check_lengths(
        recipe.model,
        tokenizer,
        [r["prompt"] + r["completion"] for r in rows],
        0,
        "filter SFT example",
        every_backend=True,
    )
    trainer = build_trainer(
        SFTTrainer,
        SFTConfig,
        sft_arguments(recipe, folder),
        SFT_FIELDS,
        model=model,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=logging_callbacks(recipe.run, folder.tensorboard("filter"), folder.metrics("filter")),
    )
    trainer.train()
    return save_adapter(trainer, folder.adapter("filter"))
