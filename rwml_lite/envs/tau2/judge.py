"""An LLM judge for tau2's natural-language assertions ("the agent should not offer a refund"),
which no database hash can check: one yes/no question per assertion over the whole conversation,
asked of any `Generator` (in recipes: the model behind `env.judge_endpoint`), greedily.
A reply that does not start with YES counts as not met, so a confused judge cannot pass a task.
"""

from __future__ import annotations

import re

from rwml_lite.models import Generator, Sampling

SYSTEM = (
    "You grade a customer-service conversation between an agent and a customer. You are given the "
    "conversation, including the agent's tool calls, and one expectation about how it went. Decide "
    "whether the conversation meets the expectation. Answer YES or NO first, then one short sentence why."
)
_THINK = re.compile(r"<think>.*?</think>", re.S)


def met(reply: str) -> bool:
    """Whether a judge's reply says YES (after any thinking), case-insensitive."""
    answer = _THINK.sub("", reply).strip().lstrip("*#>- ").upper()
    return answer.startswith("YES")


def judge(generator: Generator, transcript: list[tuple[str, str]], assertions: list[str]) -> list[bool]:
    """transcript: (speaker, text) turns in order; one verdict per assertion."""
    conversation = "\n".join(f"{speaker}: {text}" for speaker, text in transcript)
    prompts = [
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Conversation:\n{conversation}\n\nExpectation: {assertion}"},
        ]
        for assertion in assertions
    ]
    replies = generator.generate(prompts, 1, Sampling(temperature=0.0, max_new_tokens=64))
    return [met(r[0]) for r in replies]
