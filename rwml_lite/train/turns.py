"""The task-success objective of the policy stage: returns, group-normalised advantages, and the clipped
loss over the agent's own tokens of every turn.

verl-agent's GRPO for agents, which the paper follows: the G episodes of one task and seed form a
group; with gamma = 1 every agent turn's return is its episode's task success, less the invalid-action
penalty on a turn whose action was invalid; advantages are returns normalised over the group's turns
(`group_stats: turn`, verl-agent's) or over its episodes (`episode`: each turn takes its episode's
advantage, the penalty charged per invalid action of the episode). A turn is trained as its own
sequence, the prompt the agent saw (task, recent history, observation, choices) followed by the token
ids it sampled; only the reply's tokens enter the loss, so observations, tool replies and user turns
are never trained. The loss is PPO's clipped ratio to the log-probs the turns were sampled with (the
policy before the step's first update), plus verl's low-variance KL to a reference policy.
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
#: verl's clip_ratio_c: a negative advantage's loss is capped at this many times the advantage, so a ratio that
#: grew far since sampling cannot dominate the update.
DUAL_CLIP = 3.0


def episode_return(episode: EpisodeRecord, invalid_action_penalty: float) -> float:
    """Task success (1 or 0) minus the penalty for each invalid action of the episode (gamma = 1)."""
    return float(episode.won) - invalid_action_penalty * episode.num_invalid


def turn_returns(episode: EpisodeRecord, invalid_action_penalty: float) -> list[float]:
    """Each turn's return (gamma = 1): the episode's task success, less the penalty where that turn's action was
    invalid (verl-agent charges the penalty to the invalid turn's own reward)."""
    return [float(episode.won) - invalid_action_penalty * (not s.valid) for s in episode.steps]


def group_advantages(returns: list[float], scale: bool = True) -> list[float]:
    """(return - group mean), divided by the group's sample std (+ STD_EPSILON) when `scale`.
    A group whose members all did equally well teaches nothing: its advantages are 0."""
    if max(returns) - min(returns) < 1e-9:  # exactly 0, not an ulp of float noise (0.9 - fmean([0.9] * 8))
        return [0.0] * len(returns)
    mean = statistics.fmean(returns)
    std = statistics.stdev(returns) if len(returns) > 1 else 0.0
    return [(r - mean) / (std + STD_EPSILON) if scale else r - mean for r in returns]


@dataclass(frozen=True)
class Turn:
    """One agent turn to train: the prompt it saw, the reply it sampled (its token ids where the sampler returned
    them), its advantage, and the log-probs of its reply tokens under the sampling and the reference policy once
    the update has taken them."""

    prompt: Messages
    completion: str
    truncated: bool
    advantage: float
    completion_ids: tuple[int, ...] | None = None
    old_logps: tuple[float, ...] | None = None
    ref_logps: tuple[float, ...] | None = None


def episode_turns(episode: EpisodeRecord, advantages: list[float]) -> list[Turn]:
    """Every agent turn of an episode recorded with `keep_prompts`, each with its advantage."""
    return [
        Turn(s.prompt, s.completion, s.truncated, a, tuple(s.completion_ids) if s.completion_ids else None)
        for s, a in zip(episode.steps, advantages, strict=True)
    ]


def step_turns(
    episodes: list[EpisodeRecord], invalid_action_penalty: float, scale: bool = True, stats: str = "turn"
) -> tuple[list[Turn], int]:
    """Every agent turn of a step's episodes with its advantage, and how many groups had equal returns. A group is
    the episodes of one task (the step plays each task once, G times); `stats` is policy.group_stats."""
    groups: dict[str, list[EpisodeRecord]] = {}
    for ep in episodes:
        groups.setdefault(ep.task_id, []).append(ep)
    turns, equal = [], 0
    for group in groups.values():
        if stats == "episode":
            advantages = group_advantages([episode_return(ep, invalid_action_penalty) for ep in group], scale)
            per_episode = [[a] * len(ep.steps) for ep, a in zip(group, advantages)]
        else:
            returns = [turn_returns(ep, invalid_action_penalty) for ep in group]
            pooled = group_advantages([r for rs in returns for r in rs], scale) if any(returns) else []
            per_episode, at = [], 0
            for rs in returns:
                per_episode.append(pooled[at : at + len(rs)])
                at += len(rs)
        equal += all(a == 0.0 for advantages in per_episode for a in advantages)
        for ep, advantages in zip(group, per_episode):
            turns += episode_turns(ep, advantages)
    return turns, equal


def encode_turns(tokenizer, turns: list[Turn], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Left-padded token ids of prompt + reply for each turn, so that every reply ends in the last
    column, and `completion_mask` over the last K columns (K = the longest reply): 1 on a reply's
    own tokens, 0 on its prompt and padding. A reply that ended is trained with its end-of-turn
    token; one cut off at the token budget is not. The turns' old and reference log-probs, where
    they have them, come in the same K columns."""
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
    for name in ("old_logps", "ref_logps"):
        if all(getattr(t, name) is not None for t in turns):
            columns = torch.zeros((len(turns), keep), dtype=torch.float32)
            for i, (turn, n) in enumerate(zip(turns, replies)):
                columns[i, keep - n :] = torch.tensor(getattr(turn, name))
            batch[name] = columns
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _reply_ids(tokenizer, turn: Turn) -> list[int]:
    """The reply's tokens as sampled, the end token it sampled included when it ended; re-encoded from its text
    where the sampler gave no ids, with the tokenizer's end-of-turn token when it ended."""
    if turn.completion_ids:
        return list(turn.completion_ids)
    ids = tokenizer(turn.completion, add_special_tokens=False)["input_ids"]
    return ids if turn.truncated else ids + [tokenizer.eos_token_id]


def completion_tokens(tokenizer, turns: list[Turn]) -> int:
    """The reply tokens `encode_turns` trains for these turns (the loss's normaliser)."""
    return sum(len(_reply_ids(tokenizer, t)) for t in turns)


def reply_logps(model, batch: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """Log-probabilities (turns x K) of the reply tokens under `model` at the sampling temperature, zero-padded
    like `completion_mask`. Only the last K + 1 positions get logits; they stay in the model's dtype and TRL's
    `selective_log_softmax` applies the temperature (a bf16 row at a time, or its fused kernel on CUDA): no float32
    copy of the vocabulary-wide tensor."""
    keep = batch["completion_mask"].shape[1]
    attention = batch["attention_mask"]
    positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the prompt's positions
    out = model(input_ids=batch["input_ids"], attention_mask=attention, position_ids=positions, logits_to_keep=keep + 1)
    logits = out.logits[:, :-1]  # position t predicts token t + 1
    del out
    return selective_log_softmax(logits, batch["input_ids"][:, -keep:], temperature).float() * batch["completion_mask"]


def turn_loss(
    logps: torch.Tensor, batch: dict[str, torch.Tensor], normalizer: float, epsilon: float = 0.2, beta: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's PPO objective on every reply token (the clipped ratio, and for a negative advantage its dual clip at
    DUAL_CLIP), plus beta x verl's low-variance KL (k3) to the reference, summed and divided by `normalizer` (the
    reply tokens of the whole update: verl's token mean, so micro batches add up). The ratio is to `old_logps`
    where the batch has them, else to `logps` itself (the step's first update: the policy is still the one that
    sampled, the ratio is 1 and the gradient the plain policy gradient). Returns the loss and the batch's
    clipped tokens and KL summed over tokens."""
    mask, advantages = batch["completion_mask"], batch["advantages"][:, None]
    old = batch.get("old_logps", logps.detach())
    ratio = torch.exp((logps - old).clamp(-20.0, 20.0))
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    per_token = torch.where(advantages < 0, torch.minimum(per_token, -DUAL_CLIP * advantages), per_token)
    kl = torch.zeros_like(per_token)
    if beta > 0:
        delta = (batch["ref_logps"] - logps).clamp(-20.0, 20.0)
        kl = (torch.exp(delta) - delta - 1).clamp(-10.0, 10.0)
        per_token = per_token + beta * kl
    stats = {
        "clipped": float(((ratio - clipped).abs() > 0).float().mul(mask).sum()),
        "kl": float((kl.detach() * mask).sum()),
    }
    return (per_token * mask).sum() / normalizer, stats
