"""The policy stage's checkpoints: adapter (or full weights), optimizer, scheduler and step every
`policy.save_steps`, written under a temporary name and renamed, the last two kept; a rerun resumes from the
last one and sets aside the episode files its lost steps sampled."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import torch
from peft import set_peft_model_state_dict
from safetensors.torch import load_file

from rwml_lite.distributed import barrier, is_main
from rwml_lite.errors import RwmlError
from rwml_lite.runfolder import RunFolder

STATE = "training_state.pt"
CHECKPOINT = re.compile(r"checkpoint-\d+")  # not checkpoint-N.tmp, a save that a kill interrupted


def _checkpoints(folder: RunFolder) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    root = folder.checkpoints("policy")
    found = [(int(c.name.split("-")[1]), c) for c in root.glob("checkpoint-*") if CHECKPOINT.fullmatch(c.name)]
    return sorted((step, c) for step, c in found if (c / STATE).exists())


def save_checkpoint(folder: RunFolder, step: int, model, optimizer, scheduler, keep: int = 2) -> None:
    """checkpoint-N/ written under a temporary name and renamed: a kill leaves the old one intact."""
    target = folder.checkpoints("policy") / f"checkpoint-{step}"
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    torch.save(state, tmp / STATE)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    for _, old in _checkpoints(folder)[:-keep]:
        shutil.rmtree(old)


def load_weights(model, checkpoint: Path) -> None:
    """Put a checkpoint's trained weights into the model: its LoRA adapter, or (full fine-tuning) every
    weight of the whole model saved there."""
    adapter = checkpoint / "adapter_model.safetensors"
    if adapter.exists():
        set_peft_model_state_dict(model, load_file(str(adapter)))
        return
    state = {
        name: tensor
        for part in sorted(checkpoint.glob("model*.safetensors"))
        for name, tensor in load_file(part).items()
    }
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if not state or unexpected:
        raise RwmlError(
            f"{checkpoint} does not hold this model's weights ({len(state)} tensors, unexpected: {unexpected[:3]})."
        )


def resume(folder: RunFolder, model, optimizer, scheduler) -> int:
    """Load the last checkpoint into the model and optimizer; returns its step (0 without one).
    Episode files of steps after the next one were sampled by a policy that was never saved: they
    move to superseded/ so that those steps are played again."""
    found = _checkpoints(folder)
    step = found[-1][0] if found else 0
    barrier()  # every process read the same checkpoints before the main one moves any file
    if found:
        checkpoint = found[-1][1]
        load_weights(model, checkpoint)
        state = torch.load(checkpoint / STATE, weights_only=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    rollouts = folder.policy_rollouts()
    # step-N.jsonl and its per-process shards step-N.jsonl.rankR
    stale = [f for f in rollouts.glob("step-*") if int(f.name.split(".")[0].split("-")[1]) > step + 1]
    if stale and is_main():
        target = folder.root / "superseded" / f"policy_rollouts-after-step-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        target.mkdir(parents=True)
        for f in stale:
            shutil.move(str(f), target / f.name)
    barrier()
    return step
