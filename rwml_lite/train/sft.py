"""Supervised next-state training (TRL SFTTrainer + LoRA): the too-easy filter model and the WM SFT
baseline.

The data is prompt/completion text: a triplet's prompt rendered with the chat template (plus the
recipe's prefill) and the WM-SFT target `<think> </think><next_state>{real}</next_state>`, so
only the completion is learned. The filter model reads the RWML prompt, the model that samples
its K predictions; the WM SFT baseline reads the paper's no-reasoning prompt (Tables A5/A7).
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from rwml_lite.config import FilterSettings, Recipe, WmSftSettings
from rwml_lite.distributed import world
from rwml_lite.models import backend, check_lengths
from rwml_lite.models.hf import render_prompt
from rwml_lite.prompts import wm_sft_messages
from rwml_lite.runfolder import RunFolder
from rwml_lite.schemas import TripletRecord
from rwml_lite.train.common import build_trainer, free_memory, logging_callbacks, save_adapter, trainer_args

#: SFT stage -> the recipe section of its settings
SECTIONS = {"filter": "worldmodel.filter", "wm_sft": "wm_sft"}


def sft_settings(recipe: Recipe, stage: str) -> FilterSettings | WmSftSettings:
    return recipe.worldmodel.filter if stage == "filter" else recipe.wm_sft


def sft_fields(stage: str = "filter") -> dict[str, str]:
    """SFTConfig argument -> the recipe field it comes from (checked after the config is built)."""
    section = SECTIONS[stage]
    return {
        "learning_rate": f"{section}.learning_rate",
        "weight_decay": f"{section}.weight_decay",
        "warmup_steps": f"{section}.warmup_ratio",
        "per_device_train_batch_size": f"{section}.micro_batch_size",
        "gradient_accumulation_steps": f"{section}.batch_size",
        "lr_scheduler_type": f"{section}.lr_schedule",
        "num_train_epochs": f"{section}.epochs",
        "seed": "seed",
    }  # model.optimizer is passed but not checked: Unsloth's CPU fallback swaps GPU-only optimizers for AdamW


def sft_arguments(recipe: Recipe, folder: RunFolder, stage: str = "filter") -> dict:
    """Every SFTConfig argument of one SFT stage, the same on both backends but for the backend's
    own `training_overrides` (UNSLOTH_DEFAULTED among them)."""
    settings = sft_settings(recipe, stage)
    return {
        "output_dir": str(folder.checkpoints(stage)),
        "num_train_epochs": settings.epochs,
        "learning_rate": settings.learning_rate,
        "weight_decay": settings.weight_decay,
        "warmup_steps": settings.warmup_ratio,  # transformers 5: a value below 1 is the share of steps
        "per_device_train_batch_size": (micro := settings.micro_batch_size or settings.batch_size // world()),
        "gradient_accumulation_steps": settings.batch_size // (micro * world()),  # the recipe checks it divides
        "lr_scheduler_type": settings.lr_schedule,
        "max_length": recipe.model.max_seq_length,  # TRL's default (1024) would cut long prompts' targets off
        "logging_steps": 1,
        "save_strategy": "no",
        **backend(recipe.model).training_overrides(recipe.model),
        **trainer_args(recipe),
    }


def train_next_state_sft(recipe: Recipe, triplets: list[TripletRecord], folder: RunFolder) -> Path:
    """The filter model: a LoRA trained on the validation triplets' targets behind the WM SFT prompt (the paper:
    next-state SFT in the WM-SFT format)."""
    return _train(recipe, [wm_sft_messages(t.prompt) for t in triplets], triplets, folder, "filter")


def train_wm_sft(recipe: Recipe, triplets: list[TripletRecord], folder: RunFolder) -> Path:
    """The WM SFT baseline: a LoRA trained on the kept triplets behind the no-reasoning prompt."""
    return _train(recipe, [wm_sft_messages(t.prompt) for t in triplets], triplets, folder, "wm_sft")


def _train(recipe: Recipe, prompts: list, triplets: list[TripletRecord], folder: RunFolder, stage: str) -> Path:
    """Train a LoRA on the triplets' WM-SFT targets after `prompts`; returns the saved adapter's folder."""
    prefill = recipe.worldmodel.prefill
    model, tokenizer, peft_config = backend(recipe.model).trainable_policy(recipe.model, recipe.seed)
    rows = [
        {"prompt": render_prompt(tokenizer, prompt, prefill), "completion": t.target.removeprefix(prefill)}
        for prompt, t in zip(prompts, triplets)
    ]
    check_lengths(
        recipe.model,
        tokenizer,
        [r["prompt"] + r["completion"] for r in rows],
        0,
        f"{stage} SFT example",
        every_backend=True,
    )
    trainer = build_trainer(
        SFTTrainer,
        SFTConfig,
        sft_arguments(recipe, folder, stage),
        sft_fields(stage),
        model=model,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=logging_callbacks(recipe.run, folder.tensorboard(stage), folder.metrics(stage)),
    )
    trainer.train()
    adapter = save_adapter(trainer.save_model, folder.adapter(stage))
    del trainer, model
    free_memory()
    return adapter
