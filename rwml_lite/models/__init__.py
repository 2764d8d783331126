"""Backends that load a policy and sample from it behind one `Generator` interface.

Collect, filter and eval only call `generate`; tests plug in a scripted generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rwml_lite.prompts import Messages


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    max_new_tokens: int = 256
    top_p: float = 1.0
    #: Text the assistant turn starts with; it is part of every returned completion.
    prefill: str = ""


class Generator(Protocol):
    def generate(self, prompts: list[Messages], n: int, sampling: Sampling) -> list[list[str]]:
        """n completions (text after the chat template's generation prompt) for every prompt."""
        ...
