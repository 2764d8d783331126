"""What every TRL trainer of ours shares: device flags, logging targets, a metrics file, saving."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from rwml_lite.config import Recipe, RunSettings
from rwml_lite.distributed import barrier, is_main
from rwml_lite.errors import RwmlError
from rwml_lite.progress import console_progress
from rwml_lite.records import JsonlAppender, atomic_write_text

TRAINER_CONFIG = "trainer_config.json"


def trainer_args(recipe: Recipe) -> dict:
    """TrainingArguments fields that depend on the machine and the run, not on the stage."""
    run = recipe.run
    if run.report_to == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise RwmlError(
                "run.report_to is 'wandb' but wandb is not installed: `pip install 'rwml-lite[wandb]'`, or set run.report_to=tensorboard."
            ) from None
    cuda = torch.cuda.is_available()
    # mixed precision follows the weights: Unsloth refuses bf16 training of float16 weights; float32 weights
    # (full fine-tuning's master copy, where bf16 weights would round a 1e-6 update away) train under bf16 autocast
    bf16 = cuda and recipe.model.dtype != "float16" and torch.cuda.is_bf16_supported()
    return {
        "use_cpu": not cuda,
        "bf16": bf16,
        "fp16": cuda and recipe.model.dtype != "float32" and not bf16,
        "report_to": ["wandb"] if run.report_to == "wandb" else [],
        "seed": recipe.seed,
        "optim": recipe.model.optimizer,
        "disable_tqdm": False,
        # under accelerate (DDP): every LoRA weight takes part in each forward pass, so DDP need not search
        "ddp_find_unused_parameters": False,
    }


#: Trainer arguments whose defaults Unsloth's patched TRL configs replace (unsloth 2026.10.9,
#: unsloth/models/rl.py: weight decay 0.001, 10 % warmup, seed 3407, 8-bit AdamW, lr 5e-5, batch 4 x
#: accumulation 2, ...; for GRPO also IS correction off and, with loss_type dapo, truncated
#: completions masked and epsilon_high 0.28). Unsloth keeps any value passed explicitly, so every
#: trainer of ours passes each of these, on both backends, from the recipe. (It also drops the std
#: scaling for dr_grpo whatever is passed: the recipe refuses dr_grpo with scale_rewards other than none.)
UNSLOTH_DEFAULTED = (
    "learning_rate", "weight_decay", "warmup_steps", "seed", "optim", "per_device_train_batch_size",
    "gradient_accumulation_steps", "logging_steps", "report_to", "bf16", "fp16",
)  # fmt: skip
UNSLOTH_GRPO_DEFAULTED = (
    "loss_type",
    "beta",
    "mask_truncated_completions",
    "epsilon_high",
    "vllm_importance_sampling_correction",
)


def checked_config(config_class, arguments: dict, recipe_fields: dict[str, str]):
    """`config_class(**arguments)`, refusing to train if the config resolved an argument that comes
    from a recipe field (`recipe_fields`: argument -> field) to another value than the recipe's."""
    config = config_class(**arguments)
    _refuse_changes(config_class.__name__, config, arguments, recipe_fields)
    return config


def build_trainer(trainer_class, config_class, arguments: dict, recipe_fields: dict[str, str], **trainer_kwargs):
    """The trainer over `checked_config(...)`, checked again once built (Unsloth's trainers change
    their arguments in `__init__`); its resolved arguments are kept as `trainer_config.json` in its
    output folder: what really trained."""
    trainer = trainer_class(args=checked_config(config_class, arguments, recipe_fields), **trainer_kwargs)
    _refuse_changes(trainer_class.__name__, trainer.args, arguments, recipe_fields)
    # one readable line instead of tqdm plus every step's raw metrics dict (those go to the metrics file)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ConsoleProgress(Path(trainer.args.output_dir).name))
    if is_main():
        atomic_write_text(Path(trainer.args.output_dir) / TRAINER_CONFIG, trainer.args.to_json_string())
    return trainer


def _refuse_changes(who: str, config, arguments: dict, recipe_fields: dict[str, str]) -> None:
    for name, field in recipe_fields.items():
        if getattr(config, name) != arguments[name]:
            raise RwmlError(
                f"{who} turned {field}={arguments[name]!r} into {name}={getattr(config, name)!r}: the installed "
                f"TRL/Unsloth changes the recipe's objective. Reinstall the pinned versions (`pip install -e '.[gpu]'`, "
                f"see `rwml-lite doctor`)."
            )


def logging_callbacks(run: RunSettings, tensorboard_dir: Path, metrics_path: Path) -> list[TrainerCallback]:
    callbacks: list[TrainerCallback] = [JsonlMetrics(metrics_path)]
    if run.report_to == "tensorboard" and is_main():
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(tensorboard_dir))))
    return callbacks


class ConsoleProgress(TrainerCallback):
    """A progress line per trainer: steps done of all, elapsed, ETA, and the few numbers a user
    watches (loss, reward, step time), updated at every log."""

    WATCHED = {"loss": "loss", "reward": "reward", "signal_share": "signal", "hit_rate": "hits",
               "completions/clipped_ratio": "cut", "step_time": "s/step"}  # fmt: skip

    def __init__(self, label: str):
        self.label = label

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = console_progress(disable=not state.is_world_process_zero)
        self.progress.start()
        self.task = self.progress.add_task(
            f"[bold]{self.label}[/bold]", total=state.max_steps, completed=state.global_step, info=""
        )

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = " ".join(f"{label} {logs[key]:.3g}" for key, label in self.WATCHED.items() if key in (logs or {}))
        if numbers:
            self.progress.update(self.task, info=numbers)

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.stop()


class JsonlMetrics(TrainerCallback):
    """Appends every logged dict (with its step) to a JSONL file: the source of report plots."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            with JsonlAppender(self.path) as out:
                out.append({"step": state.global_step, **logs})


def save_adapter(save, target: Path, every_process: bool = True) -> Path:
    """Save the trained LoRA adapter next to the checkpoints, replacing an older one atomically;
    `save(folder)` writes it: a trainer's `save_model`, which every process calls (the main one
    writes; under DeepSpeed ZeRO-3 the others hand it their parts), or a PEFT model's
    `save_pretrained`, which only the main process calls (`every_process=False`)."""
    tmp = target.with_name(target.name + ".tmp")
    if is_main():
        shutil.rmtree(tmp, ignore_errors=True)
    if every_process or is_main():
        save(str(tmp))
    if is_main():
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    barrier()  # the others read the adapter next
    return target


class ServedLoRA:
    """The LoRA being trained as the recipe's vLLM server (model.server) samples it: `refresh(model)`
    saves it to `folder` and loads it there by path under a new name, unloading the one before;
    `close()` unloads the last. A LoRA of a few MB crosses the filesystem where TRL's server mode would
    merge it and push whole weights over NCCL, leaving the server's base model changed for eval."""

    def __init__(self, settings, folder: Path):
        self.settings, self.folder, self.generator = settings, folder, None

    def refresh(self, model):
        from rwml_lite.models.endpoint import served_generator

        self.close()
        save_adapter(model.save_pretrained, self.folder, every_process=False)
        self.generator = served_generator(self.settings, self.folder)
        return self.generator

    def close(self) -> None:
        """Unload the adapter last loaded (by the main process: the server holds one copy)."""
        from rwml_lite.models.endpoint import unload_adapter

        if self.generator is not None and is_main():
            unload_adapter(self.settings, self.generator.model)
        self.generator = None


def free_memory() -> None:
    """Free what a finished trainer held (model, gradients, optimizer) before the next model loads: the
    caller drops its references first; accelerate's wrapped forward keeps them in reference cycles that
    only the garbage collector breaks (tens of GB with full fine-tuning)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
