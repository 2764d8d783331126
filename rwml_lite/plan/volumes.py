"""How much work a recipe's collect makes: turns per episode, tasks per eval split, and the training data's volume
(the upper bound, and the expected one from this run's own counts or the paper's yield)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rwml_lite.config import Recipe


@dataclass(frozen=True)
class Volume:
    """How much training data the recipe's collect makes: triplets per rollout, the share the filter keeps, the
    tokens of a prompt (the world model's; the agent's holds the same goal, history window and observation) and
    of a target observation, and where these come from."""

    triplets_per_rollout: float
    kept_share: float
    prompt_tokens: int
    target_tokens: int
    source: str


def turns(recipe: Recipe, limit: int) -> int:
    """Agent turns of an episode at its step limit, as the environment counts steps."""
    return recipe.env.agent_turns(limit)


def eval_tasks(recipe: Recipe) -> list[int | None]:
    """Tasks per eval split: eval.num_tasks, or the whole split (None where the benchmark does not know its size)."""
    return [recipe.eval.num_tasks or recipe.env.tasks(split) for split in recipe.eval.splits]


def volumes(recipe: Recipe) -> dict[str, Volume]:
    """The upper bound (every turn of every episode a triplet, all kept, every sequence max_seq_length long) and
    the expected volume: this run's own counts and lengths where collect, build and the filter have run in
    `run.dir`, else the paper's yield on the benchmark (else the upper bound's) with prompts of half
    max_seq_length and targets of half grpo.max_completion_length."""
    from rwml_lite.runfolder import RunFolder

    length = recipe.model.max_seq_length
    upper = upper_volume(recipe)
    share, source = (upper.triplets_per_rollout, 1.0), "no yield known: as the upper bound"
    if recipe.env.PAPER_YIELD:
        share, source = recipe.env.PAPER_YIELD, f"the paper's yield on {recipe.env.name}"
    expected = Volume(*share, length // 2, recipe.grpo.max_completion_length // 2, source)
    folder = RunFolder(Path(recipe.run.dir))
    episodes, train, val = (_lines(p) for p in (folder.rollouts, folder.wm("train.jsonl"), folder.wm("val.jsonl")))
    if episodes and train:
        kept = _lines(folder.wm("rwml.jsonl")) / train if folder.wm("rwml.jsonl").exists() else expected.kept_share
        prompt, target = _triplet_tokens(recipe, folder.wm("train.jsonl"))
        expected = Volume((train + val) / episodes, kept, prompt, target, f"this run's collect ({folder.root})")
    return {"expected": expected, "upper": upper}


def upper_volume(recipe: Recipe) -> Volume:
    """The upper bound alone (`volumes`' "upper"), which reads no run folder and loads no tokenizer."""
    length = recipe.model.max_seq_length
    return Volume(turns(recipe, recipe.collect.max_steps), 1.0, length, length, "every turn a triplet, all kept")


def _triplet_tokens(recipe: Recipe, path: Path, sample: int = 256) -> tuple[int, int]:
    """Mean tokens of the first `sample` triplets' prompts and targets: counted by the model's tokenizer where it
    is on this machine, else at 4 characters a token."""
    from rwml_lite.records import iter_jsonl

    triplets = list(itertools.islice(iter_jsonl(path), sample))  # the first lines only, not the whole file
    count = _token_counter(recipe.model.name_or_path)
    prompts = [count("\n".join(str(m["content"]) for m in t["prompt"])) for t in triplets]
    targets = [count(t["target"]) for t in triplets]
    return round(sum(prompts) / len(prompts)), round(sum(targets) / len(targets))


@functools.lru_cache(maxsize=4)
def _token_counter(name_or_path: str) -> Callable[[str], int]:
    """Tokens of a text by the model's tokenizer where it is on this machine, else at 4 characters a token; the
    tokenizer is loaded once per model and process."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=True)

        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    except (OSError, ValueError):  # not downloaded, or not a tokenizer's folder (a GGUF file)

        def count(text: str) -> int:
            return len(text) // 4

    return count


def _lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
