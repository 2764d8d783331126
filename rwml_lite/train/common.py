"""What every TRL trainer of ours shares: device flags, logging targets, a metrics file, saving."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import TrainerCallback

from rwml_lite.config import Recipe, RunSettings
from rwml_lite.errors import RwmlError
from rwml_lite.records import JsonlAppender


def trainer_args(recipe: Recipe) -> dict:
    """TrainingArguments fields that depend on the machine and the run, not on the stage."""
    run = recipe.run
    if run.report_to == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise RwmlError("run.report_to is 'wandb' but wandb is not installed: `pip install 'rwml-lite[wandb]'`, or set run.report_to=tensorboard.") from None
    cuda = torch.cuda.is_available()
    return {
        "use_cpu": not cuda,
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "report_to": ["wandb"] if run.report_to == "wandb" else [],
        "seed": recipe.seed,
        "optim": recipe.model.optimizer,
        "disable_tqdm": False,
    }


def logging_callbacks(run: RunSettings, tensorboard_dir: Path, metrics_path: Path) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = [JsonlMetrics(metrics_path)]
    if run.report_to == "tensorboard":
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(tensorboard_dir))))
    return callbacks


class JsonlMetrics(TrainerCallback):
    """Appends every logged dict (with its step) to a JSONL file: the source of report plots."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            with JsonlAppender(self.path) as out:
                out.append({"step": state.global_step, **logs})


def save_adapter(trainer, target: Path) -> Path:
    """Save the trained LoRA adapter next to the checkpoints, replacing an older one atomically."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return target
