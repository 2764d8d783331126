"""Data parallelism under `accelerate launch`: which process this is, how work is dealt out, how
results come back.

Every process runs the whole pipeline on the same recipe. Sampling work is dealt out by position
(process r takes items r, r + N, r + 2N, ...): the episodes of collect, eval and each policy step,
and the filter's and eval's world-model predictions. Each process appends its episodes to a shard
file of its own, which the main process merges into the stage's file, so a killed run resumes
from every shard whatever number of processes the rerun has. The trainers are TRL's (DDP through
accelerate) or, in the policy stage, ours with its gradients summed over the processes. Only the
main process writes whole files: the manifest, triplets, reports, checkpoints and adapters.

A plain `rwml-lite train` is one process: every function here is then the identity, and nothing
initialises torch.distributed. torch is imported inside the functions: the recipe's checks call
`world()` before Unsloth, which must be imported ahead of torch.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
R = TypeVar("R")


def world() -> int:
    """The number of processes (`WORLD_SIZE`, set by accelerate's launcher; 1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@functools.cache
def _state():
    """accelerate's process state, created once, on the CPU where there is no GPU: TRL's trainers
    then find the same state (gloo or NCCL group) already set up."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    return _state().process_index if world() > 1 else 0


def is_main() -> bool:
    return rank() == 0


def say(line: str) -> None:
    """A line (rich markup) on the console's stderr, once (by the main process) however many processes run."""
    if is_main():
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(line)  # whole lines in a log file too


def barrier() -> None:
    """Wait until every process got here (a no-op in one process)."""
    if world() > 1:
        _state().wait_for_everyone()


def local_device() -> torch.device:
    """This process's GPU (one per process under accelerate), else the CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def deal(items: Sequence[T]) -> list[T]:
    """This process's share of `items`: positions rank, rank + N, rank + 2N, ..."""
    return list(items[rank() :: world()])


def gather(mine: list[T]) -> list[T]:
    """Every process's `deal` share put back in the original order (all processes get all of it)."""
    if world() == 1:
        return mine
    import torch

    shares: list = [None] * world()
    torch.distributed.all_gather_object(shares, mine)
    merged: list = [None] * sum(len(s) for s in shares)
    for r, share in enumerate(shares):
        merged[r :: world()] = share
    return merged


def dealt(work: Callable[[list[T]], list[R]], items: Sequence[T]) -> list[R]:
    """`work(items)` done in shares, one per process, and gathered: one result per item, in order."""
    share = deal(items)
    return gather(work(share) if share else [])


def sum_over_processes(tensors: list[torch.Tensor]) -> None:
    """Add up each tensor over the processes, in place (a no-op in one process)."""
    if world() > 1:
        import torch

        for t in tensors:
            torch.distributed.all_reduce(t)


def seed_sampling(seed: int) -> None:
    """Seed this process's sampling: the same seed in one process, a different stream per process
    under accelerate, so that copies of one prompt dealt to two processes (a policy group's G
    episodes of a task) are not sampled alike."""
    import torch

    torch.manual_seed(seed + 7919 * rank())


def shard(path: Path) -> Path:
    """The file where this process appends its share of `path`'s records."""
    return path.with_name(f"{path.name}.rank{rank()}")


def shards(path: Path) -> list[Path]:
    """The shard files of `path` that exist, from any number of processes."""
    return sorted(path.parent.glob(f"{path.name}.rank*")) if path.parent.exists() else []
