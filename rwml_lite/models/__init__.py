"""Backends that load a policy and sample from it behind one `Generator` interface.

Collect, filter and eval only call `generate`; tests plug in a scripted generator.
"""

from __future__ import annotations

import importlib.util
import os
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

    def require_distinct(self, n: int) -> None:
        """Refuse n > 1 samples under greedy decoding, which would all be the same."""
        if self.temperature == 0 and n > 1:
            raise RwmlError(
                "Greedy decoding (temperature 0) gives identical samples; ask for n=1 or a temperature > 0."
            )


class Completion(str):
    """A sampled reply (the text after the generation prompt) that remembers whether it was cut off
    at the token budget, and the token ids it was sampled as (after the prefill; an ended reply's
    end token included, whichever of the model's end tokens it was): the policy stage trains those
    ids, since decoded text can re-encode to other splits. Generators that do not know return plain
    strings, taken as ended and re-encoded with the tokenizer's end-of-turn token."""

    truncated: bool = False
    token_ids: list[int] | None = None

    @classmethod
    def of(cls, text: str, truncated: bool, token_ids=None, stop_ids=()) -> Completion:
        """`token_ids` are cut after the first of `stop_ids` (the end token; padding after it is dropped)."""
        completion = cls(text)
        completion.truncated = truncated
        if token_ids is not None:
            ids = [int(i) for i in token_ids]
            ends = [k for k, i in enumerate(ids) if i in stop_ids]
            completion.token_ids = ids[: ends[0] + 1] if ends else ids
        return completion


def stop_ids(tokenizer, generation_config=None) -> set[int]:
    """Token ids that end a reply: the tokenizer's end and padding tokens, and the end tokens the model's generation
    config adds (Qwen's <|im_end|> and <|endoftext|>, Llama-3.1's <|eot_id|> and <|eom_id|>)."""
    configured = getattr(generation_config, "eos_token_id", None)
    ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    ids |= set(configured) if isinstance(configured, list) else {configured}
    return {i for i in ids if i is not None}


#: Sampling as the paper's loss assumes it: the softmax at the temperature (top_p as asked) and nothing else.
#: Left out, transformers and vLLM take top_k, min_p and a repetition penalty from the model's
#: generation_config.json (Qwen2.5-7B-Instruct's: top_k 20, repetition_penalty 1.05).
NEUTRAL = {"top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


class Generator(Protocol):
    def generate(self, prompts: list[Messages], n: int, sampling: Sampling) -> list[list[str]]:
        """n completions (text after the chat template's generation prompt) for every prompt."""
        ...


def backend(settings: ModelSettings):
    """The module of the recipe's backend (`hf` or `unsloth`); both expose the same functions:

    `generator(settings, adapter)` a Generator over the base model or a saved LoRA adapter,
    `trainable_policy(settings, seed)` (model, tokenizer, peft_config) for a TRL trainer, its LoRA
    initialised from `seed`,
    `training_overrides(settings)` the trainer-config fields that differ between backends, and for
    the policy stage's own loop `policy_model(settings, seed, adapter)` (LoRA model, tokenizer),
    `live_generator(model, tokenizer, settings)` sampling that LoRA as it trains, and
    `to_training(model)` called after sampling, before a gradient step.
    """
    if settings.backend == "unsloth":
        from rwml_lite.models import unsloth as module
    else:
        from rwml_lite.models import hf as module
    return module


def sampler(settings: ModelSettings, adapter=None) -> Generator:
    """What collect, the filter and eval sample from: the recipe's vLLM server when it names one (the
    adapter loaded there), else the backend's own generator over the base model or `adapter`."""
    if settings.server is not None:
        from rwml_lite.models.endpoint import served_generator

        return served_generator(settings, adapter)
    return backend(settings).generator(settings, adapter)


def prepare_backend(settings: ModelSettings) -> None:
    """Check the backend can run here and import it first: Unsloth patches transformers, TRL and
    PEFT when it is imported, so it must come before them, and its allocator variables before torch
    (which reads them at import): the CLI calls this before anything imports torch."""
    if settings.backend != "unsloth":
        return
    os.environ.update({k: v for k, v in vllm_environment(settings).items() if k not in os.environ})
    import torch

    if not torch.cuda.is_available():
        raise RwmlError(
            "model.backend is 'unsloth', which needs an NVIDIA GPU, and torch sees none on this machine. "
            "Set model.backend=hf (transformers + peft, runs on the CPU; add model.load_in_4bit=false) or run on a GPU machine."
        )
    check_gpu_packages(settings)
    backend(settings)


def check_gpu_packages(settings: ModelSettings) -> None:
    """Refuse, before anything loads, a recipe whose load path imports a package that is missing."""
    if not settings.fast_inference:
        return
    if importlib.util.find_spec("vllm") is None:
        raise RwmlError(
            "model.fast_inference is true but the vllm package is not installed: `pip install -e '.[gpu]'`, "
            "or set model.fast_inference=false to sample with Unsloth's HF generation (slower)."
        )
    # vLLM >= 0.28 serves bitsandbytes weights only through this plugin; Unsloth raises at load without it.
    if (settings.load_in_4bit or settings.name_or_path.endswith("-bnb-4bit")) and importlib.util.find_spec(
        "vllm_bnb_plugin"
    ) is None:
        raise RwmlError(
            "model.load_in_4bit is true with model.fast_inference, and vLLM needs its bitsandbytes plugin for 4-bit "
            "weights, which is not installed: `pip install vllm-bnb-plugin==0.0.3` (or `pip install -e '.[gpu]'`), "
            "or set model.fast_inference=false (Unsloth's HF sampling) or model.load_in_4bit=false (16-bit weights)."
        )


def vllm_environment(settings: ModelSettings) -> dict[str, str]:
    """Variables Unsloth reads at import. Standby lets the shared-weight vLLM engine sleep (keep the
    weights, free the KV cache) while our trainers run; it also turns off PyTorch's expandable
    segments for the whole process, so only a vLLM run gets it. The override keeps the recipe's
    gpu_memory_utilization (standby would pick its own tier by GPU size)."""
    if not settings.fast_inference:
        return {}
    return {"UNSLOTH_VLLM_STANDBY": "1", "UNSLOTH_VLLM_STANDBY_UTIL_OVERRIDE": "1"}


def check_lengths(
    settings: ModelSettings, tokenizer, texts: list[str], new_tokens: int, what: str, every_backend: bool = False
) -> None:
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


def use_chat_template(tokenizer, settings: ModelSettings) -> None:
    """Put the recipe's `model.chat_template` on the tokenizer, when it names one."""
    name = settings.chat_template
    if name is None:
        return
    if name == "qwen3":
        from trl.chat_template_utils import qwen3_chat_template

        tokenizer.chat_template = qwen3_chat_template
    elif name.endswith(".jinja") and os.path.isfile(name):
        with open(name) as f:
            tokenizer.chat_template = f.read()
    else:
        raise RwmlError(
            f"model.chat_template={name!r} is neither 'qwen3' nor an existing .jinja file; use one of those, "
            "or null for the model's own template."
        )


def user_simulators(recipe, stage: str) -> list[Generator] | None:
    """What plays the user in `stage`'s conversations, where the benchmark has a simulated one (None where it has
    not): the endpoints the recipe names for the stage, else
    env.user_endpoints (a task's rollouts are dealt among them; eval takes the first, so that its users never mix
    unless its own list asks), else the recipe's own model without adapter (so that a trained policy is always
    judged against the same user)."""
    if not recipe.env.SIMULATED_USER:
        return None
    endpoints = recipe.env.stage_user_endpoints.get(stage)
    if endpoints is None:
        endpoints = recipe.env.user_endpoints[:1] if stage == "eval" else recipe.env.user_endpoints
    if endpoints:
        from rwml_lite.models.endpoint import EndpointGenerator

        return [EndpointGenerator(e.url, e.model) for e in endpoints]
    return [sampler(recipe.model)]
