"""The task-success objective of the policy stage: episode returns, group-normalised advantages, and
the loss over the agent's own tokens of every turn.

verl-agent's GRPO for agents, which the paper follows: an episode's return is its task success
(minus an optional penalty per invalid action), the G episodes of one task and seed form a group,
each episode's advantage is its return normalised within the group, and with gamma = 1 every agent
turn of the episode carries that advantage. A turn is trained as its own sequence, the prompt the
agent saw (task, recent history, observation, choices) followed by its reply; only the reply's
tokens enter the loss, so observations, tool replies and user turns are never trained.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from trl.trainer.utils import selective_log_softmax

from rwml_lite.models.hf import render_prompt
from rwml_lite.prompts import Messages
from rwml_lite.schemas import EpisodeRecord

#: Added to a group's return std before dividing (TRL's GRPO uses the same), so a group whose
#: returns barely differ does not blow its advantages up.
STD_EPSILON = 1e-4


def episode_return(episode: EpisodeRecord, invalid_action_penalty: float) -> float:
    """Task success (1 or 0) minus the penalty for each invalid action of the episode (gamma = 1)."""
    return float(episode.won) - invalid_action_penalty * episode.num_invalid


def group_advantages(returns: list[float], scale: bool = True) -> list[float]:
    """(return - group mean), divided by the group's sample std (+ STD_EPSILON) when `scale`.
    A group whose episodes all did equally well teaches nothing: its advantages are 0."""
    if max(returns) - min(returns) < 1e-9:  # exactly 0, not an ulp of float noise (0.9 - fmean([0.9] * 8))
        return [0.0] * len(returns)
    mean = statistics.fmean(returns)
    std = statistics.stdev(returns) if len(returns) > 1 else 0.0
    return [(r - mean) / (std + STD_EPSILON) if scale else r - mean for r in returns]


@dataclass(frozen=True)
class Turn:
    """One agent turn to train: the prompt it saw, the reply it sampled, and its episode's advantage."""

    prompt: Messages
    completion: str
    truncated: bool
    advantage: float


def episode_turns(episode: EpisodeRecord, advantage: float) -> list[Turn]:
    """Every agent turn of an episode recorded with `keep_prompts`, each with the episode's advantage."""
    return [Turn(s.prompt, s.completion, s.truncated, advantage) for s in episode.steps]


def step_turns(
    episodes: list[EpisodeRecord], invalid_action_penalty: float, scale: bool = True
) -> tuple[list[Turn], int]:
    """Every agent turn of a step's episodes with its advantage, and how many groups had equal
    returns. A group is the episodes of one task (the step plays each task once, G times)."""
    groups: dict[str, list[EpisodeRecord]] = {}
    for ep in episodes:
        groups.setdefault(ep.task_id, []).append(ep)
    turns, equal = [], 0
    for group in groups.values():
        returns = [episode_return(ep, invalid_action_penalty) for ep in group]
        equal += len(set(returns)) == 1
        for ep, advantage in zip(group, group_advantages(returns, scale)):
            turns += episode_turns(ep, advantage)
    return turns, equal


def encode_turns(tokenizer, turns: list[Turn], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Left-padded token ids of prompt + reply for each turn, so that every reply ends in the last
    column, and `completion_mask` over the last K columns (K = the longest reply): 1 on a reply's
    own tokens, 0 on its prompt and padding. A reply that ended is trained with its end-of-turn
    token; one cut off at the token budget is not."""
    rows, replies = [], []
    for turn in turns:
        prompt = tokenizer(render_prompt(tokenizer, turn.prompt), add_special_tokens=False)["input_ids"]
        reply = _reply_ids(tokenizer, turn)
        rows.append(prompt + reply)
        replies.append(len(reply))
    width, keep = max(map(len, rows)), max(replies)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), keep), dtype=torch.float32)
    for i, (row, n) in enumerate(zip(rows, replies)):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        attention_mask[i, width - len(row) :] = 1
        completion_mask[i, keep - n :] = 1.0
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "completion_mask": completion_mask,
        "advantages": torch.tensor([t.advantage for t in turns], dtype=torch.float32),
    }
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _reply_ids(tokenizer, turn: Turn) -> list[int]:
    """The reply's tokens, with the end-of-turn token when it ended."""
    ids = tokenizer(turn.completion, add_special_tokens=False)["input_ids"]
    return ids if turn.truncated else ids + [tokenizer.eos_token_id]


def completion_tokens(tokenizer, turns: list[Turn]) -> int:
    """The reply tokens `encode_turns` trains for these turns (the loss's normaliser)."""
    return sum(len(_reply_ids(tokenizer, t)) for t in turns)


def turn_loss(model, batch: dict[str, torch.Tensor], temperature: float, normalizer: float) -> torch.Tensor:
    """-sum(advantage x log p(reply token)) / normalizer over the reply tokens of a micro batch.

    Each optimizer step trains once on rollouts of the current policy, so the clipped GRPO ratio is
    exactly 1 where its gradient is taken and this is the same gradient. `normalizer` is the number
    of reply tokens of the whole step (DAPO's token-level mean), so micro batches add up to the
    step's loss. Log-probabilities are those the replies were sampled from (logits / temperature);
    only the last K + 1 positions get logits, which keeps the vocabulary-wide tensor small.
    """
    keep = batch["completion_mask"].shape[1]
    attention = batch["attention_mask"]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the prompt's positions
    out = model(input_ids=batch["input_ids"], attention_mask=attention, position_ids=positions, logits_to_keep=keep + 1)
    logits = out.logits[:, :-1].float() / temperature  # position t predicts token t + 1
    logps = selective_log_softmax(logits, batch["input_ids"][:, -keep:])
    weights = batch["advantages"][:, None] * batch["completion_mask"]
    return -(weights * logps).sum() / normalizer
