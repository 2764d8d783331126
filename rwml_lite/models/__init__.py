"""Backends that load a policy and sample from it behind one `Generator` interface.

Collect, filter and eval only call `generate`; tests plug in a scripted generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rwml_lite.config import ModelSettings
from rwml_lite.errors import RwmlError
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


def backend(settings: ModelSettings):
    """The module of the recipe's backend (`hf` or `unsloth`); both expose the same three functions:

    `generator(settings, adapter)` a Generator over the base model or a saved LoRA adapter,
    `trainable_policy(settings)` (model, tokenizer, peft_config) for a TRL trainer, and
    `training_overrides(settings)` the trainer-config fields that differ between backends.
    """
    if settings.backend == "unsloth":
        from rwml_lite.models import unsloth as module
    else:
        from rwml_lite.models import hf as module
    return module


def prepare_backend(settings: ModelSettings) -> None:
    """Check the backend can run here and import it first: Unsloth patches transformers, TRL and
    PEFT when it is imported, so it must come before them (the CLI calls this before any stage)."""
    if settings.backend != "unsloth":
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise RwmlError(
            "model.backend is 'unsloth', which needs an NVIDIA GPU, and torch sees none on this machine. "
            "Set model.backend=hf (transformers + peft, runs on the CPU; add model.load_in_4bit=false) or run on a GPU machine."
        )
    if settings.fast_inference and importlib.util.find_spec("vllm") is None:
        raise RwmlError(
            "model.fast_inference is true but the vllm package is not installed: `pip install 'rwml-lite[gpu]'`, "
            "or set model.fast_inference=false to sample with Unsloth's HF generation (slower)."
        )
    backend(settings)


def check_lengths(settings: ModelSettings, tokenizer, texts: list[str], new_tokens: int, what: str, every_backend: bool = False) -> None:
    """Refuse sequences longer than model.max_seq_length up front: the unsloth backend sizes vLLM's
    context and its kernels by it and otherwise truncates inputs and fails mid-run; SFT (every
    backend) would cut the target off the end of a long example."""
    if not texts or not (every_backend or settings.backend == "unsloth"):
        return
    longest = max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    if longest + new_tokens > settings.max_seq_length:
        raise RwmlError(
            f"The longest {what} has {longest} tokens; with {new_tokens} new tokens that exceeds "
            f"model.max_seq_length={settings.max_seq_length}. Raise model.max_seq_length to at least "
            f"{longest + new_tokens} (then check `rwml-lite plan`), or shorten the history (agent.history, "
            f"worldmodel.history) or the token budgets."
        )


def user_simulator(recipe) -> Generator | None:
    """What plays the customer in tau2 conversations: the endpoint the recipe names, else the recipe's
    own model without adapter (so that a trained policy is always judged against the same user)."""
    if recipe.env.name != "tau2":
        return None
    if recipe.env.user_endpoint:
        from rwml_lite.models.endpoint import EndpointGenerator

        return EndpointGenerator(recipe.env.user_endpoint, recipe.env.user_model)
    return backend(recipe.model).generator(recipe.model)
