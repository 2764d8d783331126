"""ROUGE-L for the predictions an embedding blurs: structured text such as tau2's tool replies, scored as the paper
does (docs/paper.md), by the longest common subsequence of words, rounded so that small wording changes do not pay."""

from __future__ import annotations

import math


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 over lower-cased whitespace tokens: the longest common subsequence's precision
    and recall, harmonically averaged (tau2 tool replies are scored this way, docs/paper.md)."""
    a, b = prediction.lower().split(), reference.lower().split()
    if not a or not b:
        return float(a == b)
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    common = previous[-1]
    if not common:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


def rounded_rouge(prediction: str, reference: str) -> float:
    """ROUGE-L F1 rounded to the nearest 0.2, halves up: 0, 0.2, ..., 1 (coarse, so small wording changes
    do not pay). Python's round() would send halves to even (0.5 -> 0.4, 0.7 -> 0.8); the epsilon keeps
    0.7 * 5 = 3.4999... a half."""
    return math.floor(rouge_l_f1(prediction, reference) * 5 + 0.5 + 1e-9) / 5
