"""Unsloth backend: one GPU, 4-bit base weights with Unsloth's kernels, vLLM sampling in-process.

With `fast_inference`, Unsloth builds a vLLM engine first and the trainable model on vLLM's own
tensors, so trainer and sampler hold one copy of the base weights; only LoRA tensors move.
`UNSLOTH_VLLM_STANDBY=1` (set before `import unsloth`) lets vLLM drop its KV cache while the
trainer runs and keep the weights. A process therefore loads the model once: collect, the
filter's SFT, RWML's GRPO and eval all reuse it, each trainer starting from the same freshly
initialised LoRA, and sampling picks its adapter per call (a saved one, or none for the base).

Without vLLM (`fast_inference: false`, or Unsloth's CPU fallback in tests) sampling runs through
transformers' `generate` on the same model, the adapter's weights loaded into the LoRA slot.
"""

from __future__ import annotations

import os

# Read when unsloth is imported. Standby keeps the shared weights and frees vLLM's KV cache while
# training; the override keeps the recipe's gpu_memory_utilization (standby would pick its own tier).
os.environ.setdefault("UNSLOTH_VLLM_STANDBY", "1")
os.environ.setdefault("UNSLOTH_VLLM_STANDBY_UTIL_OVERRIDE", "1")

import unsloth  # noqa: E402,F401  must precede transformers/trl/peft: it patches them on import
from unsloth import FastLanguageModel  # noqa: E402

import contextlib  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from peft import get_peft_model_state_dict, set_peft_model_state_dict  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from rwml_lite.config import ModelSettings  # noqa: E402
from rwml_lite.errors import RwmlError  # noqa: E402
from rwml_lite.models import Sampling, check_lengths  # noqa: E402
from rwml_lite.models.hf import HFGenerator, render_prompt  # noqa: E402
from rwml_lite.prompts import Messages  # noqa: E402
from rwml_lite.sources import checkpoint_folder  # noqa: E402

#: settings JSON -> (LoRA-wrapped model, tokenizer, the LoRA's initial state): one load per process.
_LOADED: dict[str, tuple] = {}


def _load(settings: ModelSettings):
    key = settings.model_dump_json()
    if key not in _LOADED:
        folder = checkpoint_folder(settings.name_or_path)
        try:
            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=folder,
                max_seq_length=settings.max_seq_length,
                dtype=None if settings.dtype == "auto" else getattr(torch, settings.dtype),
                load_in_4bit=settings.load_in_4bit,
                fast_inference=settings.fast_inference,
                max_lora_rank=settings.lora.r,
                gpu_memory_utilization=settings.gpu_memory_utilization,
                local_files_only=Path(folder).exists(),
            )
        except (OSError, NotImplementedError, ImportError) as e:
            raise RwmlError(f"Unsloth could not load `{settings.name_or_path}` (model.name_or_path): {e}") from None
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        lora = settings.lora
        model = FastLanguageModel.get_peft_model(
            model,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            use_gradient_checkpointing="unsloth" if settings.gradient_checkpointing else False,
        )
        initial = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
        _LOADED[key] = (model, tokenizer, initial)
    return _LOADED[key]


def trainable_policy(settings: ModelSettings):
    """(LoRA model, tokenizer, None): the shared model with its LoRA reset to the initial weights."""
    model, tokenizer, initial = _load(settings)
    set_peft_model_state_dict(model, initial)
    FastLanguageModel.for_training(model)
    return model, tokenizer, None


def training_overrides(settings: ModelSettings) -> dict:
    # Unsloth's own checkpointing (activations offloaded to CPU) was set up by get_peft_model;
    # transformers' would wrap the layers a second time.
    return {"gradient_checkpointing": False}


def generator(settings: ModelSettings, adapter: Path | None = None) -> UnslothGenerator:
    model, tokenizer, _ = _load(settings)
    return UnslothGenerator(model, tokenizer, settings, adapter)


class UnslothGenerator:
    """`Generator` over the shared model: vLLM's `fast_generate` with the adapter as a LoRA request
    when the engine exists, else transformers' `generate` with the adapter's weights in the slot."""

    def __init__(self, model, tokenizer, settings: ModelSettings, adapter: Path | None):
        self.model, self.tokenizer, self.settings, self.adapter = model, tokenizer, settings, adapter

    def generate(self, prompts: list[Messages], n: int, sampling: Sampling) -> list[list[str]]:
        if getattr(self.model, "vllm_engine", None) is None:
            with self._adapter_in_slot():
                return HFGenerator(self.model, self.tokenizer, self.settings.generation_batch_size).generate(prompts, n, sampling)
        from vllm import SamplingParams

        if sampling.temperature == 0 and n > 1:
            raise RwmlError("Greedy decoding (temperature 0) gives identical samples; ask for n=1 or a temperature > 0.")
        params = SamplingParams(
            n=n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens
        )
        texts = [render_prompt(self.tokenizer, p, sampling.prefill) for p in prompts]
        check_lengths(self.settings, self.tokenizer, texts, sampling.max_new_tokens, "prompt")
        lora = self.model.load_lora(str(self.adapter)) if self.adapter else None
        outputs = self.model.fast_generate(texts, sampling_params=params, lora_request=lora, use_tqdm=len(texts) > 64)
        return [[sampling.prefill + o.text for o in out.outputs] for out in outputs]

    @contextlib.contextmanager
    def _adapter_in_slot(self):
        FastLanguageModel.for_inference(self.model)
        try:
            if self.adapter is None:
                with self.model.disable_adapter():
                    yield
            else:
                set_peft_model_state_dict(self.model, load_file(str(Path(self.adapter) / "adapter_model.safetensors")))
                yield
        finally:
            FastLanguageModel.for_training(self.model)
