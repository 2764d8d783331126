"""Unsloth backend: one GPU, 4-bit base weights with Unsloth's kernels, vLLM sampling in-process.

With `fast_inference`, Unsloth builds a vLLM engine first and the trainable model on vLLM's own
tensors, so trainer and sampler hold one copy of the base weights; only LoRA tensors move. A
process therefore loads the model once: collect, the filter's SFT, RWML's GRPO and eval all reuse
it, each trainer starting from a LoRA freshly initialised from the recipe's seed, and sampling
picks its adapter per call (a saved one, or none for the base). The engine sleeps while a trainer
runs and wakes to sample (`models/vllm_engine.py`); `prepare_backend` sets Unsloth's standby
variables before this module is imported, and only for a vLLM recipe.

Without vLLM (`fast_inference: false`, or Unsloth's CPU fallback in tests) sampling runs through
transformers' `generate` on the same model, the adapter's weights loaded into the LoRA slot. That
is also the path for a model larger than the GPU: with `model.offload_layers` Unsloth keeps those
decoder layers' frozen weights in pinned CPU RAM and copies each to the GPU as it runs, in training
and in generation alike, so trainer and sampler still share one copy and the LoRA being trained is
the one sampled (vLLM cannot sample an offloaded model: it would read the emptied GPU tensors).
"""

from __future__ import annotations

import unsloth  # noqa: F401  must precede transformers/trl/peft: it patches them on import
from unsloth import FastLanguageModel

import contextlib  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from peft import set_peft_model_state_dict  # noqa: E402
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from rwml_lite.config import ModelSettings  # noqa: E402
from rwml_lite.models import (  # noqa: E402
    NEUTRAL,
    Completion,
    Sampling,
    check_lengths,
    stop_ids,
    use_chat_template,
    vllm_engine,
)
from rwml_lite.models.hf import HFGenerator, render_prompt  # noqa: E402
from rwml_lite.models.load_errors import explain_load_error  # noqa: E402
from rwml_lite.prompts import Messages  # noqa: E402
from rwml_lite.sources import checkpoint_folder  # noqa: E402

#: The model attribute holding the vLLM request for the policy stage's live LoRA (one per optimizer step).
LIVE_REQUEST = "_rwml_lite_live_request"
#: settings JSON -> (LoRA-wrapped model, tokenizer, its adapter requests): one load per process.
_LOADED: dict[str, tuple] = {}


def _load(settings: ModelSettings):
    key = settings.model_dump_json()
    if key not in _LOADED:
        folder = checkpoint_folder(settings.name_or_path)
        lora = settings.lora
        try:
            model, tokenizer = FastLanguageModel.from_pretrained(
                model_name=folder,
                max_seq_length=settings.max_seq_length,
                dtype=None if settings.dtype == "auto" else getattr(torch, settings.dtype),
                load_in_4bit=settings.load_in_4bit,
                fast_inference=settings.fast_inference,
                max_lora_rank=lora.r,
                gpu_memory_utilization=settings.gpu_memory_utilization,
                local_files_only=Path(folder).exists(),
                # block swap (these layers' weights in CPU RAM), passed only when asked: Unsloth's CPU
                # fallback hands unknown arguments to transformers, which refuses them
                **({"offload_layers": settings.offload_layers} if settings.offload_layers else {}),
            )
            model = FastLanguageModel.get_peft_model(
                model,
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                layers_to_transform=lora.layers(model.config.num_hidden_layers),
                use_gradient_checkpointing="unsloth" if settings.gradient_checkpointing else False,
            )
        except Exception as e:  # every load failure becomes a named-field error (models/load_errors.py)
            raise explain_load_error(e, settings) from e
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        use_chat_template(tokenizer, settings)
        requests = vllm_engine.AdapterRequests(model.load_lora) if getattr(model, "vllm_engine", None) else None
        _LOADED[key] = (model, tokenizer, requests)
    return _LOADED[key]


def trainable_policy(settings: ModelSettings, seed: int):
    """(LoRA model, tokenizer, None): the shared model, its LoRA initialised afresh from `seed` as
    PEFT initialises a new adapter (Unsloth's own init would use its fixed random_state 3407), and
    the vLLM engine asleep so that the trainer gets the KV cache's memory."""
    model, tokenizer, _ = _load(settings)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module in model.modules():
            if isinstance(module, LoraLayer):
                module.reset_lora_parameters("default", True)
    vllm_engine.sleep(model)
    FastLanguageModel.for_training(model)
    return model, tokenizer, None


def policy_model(settings: ModelSettings, seed: int, adapter: Path | None = None):
    """(LoRA model, tokenizer) for the policy stage's own loop: the shared model with a LoRA fresh
    from `seed`, or with the saved adapter's weights in its slot to be trained further."""
    model, tokenizer, _ = trainable_policy(settings, seed)
    if adapter is not None:
        set_peft_model_state_dict(model, load_file(str(Path(adapter) / "adapter_model.safetensors")))
    return model, tokenizer


def live_generator(model, tokenizer, settings: ModelSettings) -> UnslothGenerator:
    """Sampling from the policy as it trains: vLLM gets the live LoRA tensors at every call (a saved
    adapter's request would be one optimizer step stale), transformers uses the model as it is."""
    return UnslothGenerator(model, tokenizer, settings, None, _load(settings)[2], live=True)


def to_training(model) -> None:
    """Free vLLM's KV cache and switch Unsloth's kernels back to training after sampling. Unsloth's
    GRPO trainer (RWML's, earlier in the process) sets UNSLOTH_RETURN_HIDDEN_STATES=1 around its own
    log-prob pass, and on some paths leaves it set; the model would then return hidden states where
    the policy loss reads logits."""
    os.environ["UNSLOTH_RETURN_HIDDEN_STATES"] = "0"
    setattr(model, LIVE_REQUEST, None)  # the weights are about to change
    vllm_engine.sleep(model)
    FastLanguageModel.for_training(model)


def training_overrides(settings: ModelSettings) -> dict:
    # Unsloth's own checkpointing (activations offloaded to CPU) was set up by get_peft_model;
    # transformers' would wrap the layers a second time.
    return {"gradient_checkpointing": False}


def generator(settings: ModelSettings, adapter: Path | None = None) -> UnslothGenerator:
    model, tokenizer, requests = _load(settings)
    return UnslothGenerator(model, tokenizer, settings, adapter, requests)


class UnslothGenerator:
    """`Generator` over the shared model: vLLM's `fast_generate` with the adapter as a LoRA request
    when the engine exists, else transformers' `generate` with the adapter's weights in the slot."""

    def __init__(
        self,
        model,
        tokenizer,
        settings: ModelSettings,
        adapter: Path | None,
        requests: vllm_engine.AdapterRequests | None,
        live: bool = False,
    ):
        """`live`: sample the LoRA in the model's slot as it is now (the policy stage), not `adapter`."""
        self.model, self.tokenizer, self.settings, self.adapter = model, tokenizer, settings, adapter
        self.requests, self.live = requests, live

    def fits(self, prompt: Messages, new_tokens: int) -> bool:
        """Whether `prompt` and `new_tokens` more fit model.max_seq_length, vLLM's context: the rollout
        ends a conversation that outgrew it (tau2) where `generate` would refuse the whole batch."""
        ids = self.tokenizer(render_prompt(self.tokenizer, prompt), add_special_tokens=False)["input_ids"]
        return len(ids) + new_tokens <= self.settings.max_seq_length

    def generate(self, prompts: list[Messages], n: int, sampling: Sampling) -> list[list[str]]:
        if getattr(self.model, "vllm_engine", None) is None:
            with self._adapter_in_slot():
                return HFGenerator(self.model, self.tokenizer, self.settings.generation_batch_size).generate(
                    prompts, n, sampling
                )
        from vllm import SamplingParams

        sampling.require_distinct(n)
        texts = [render_prompt(self.tokenizer, p, sampling.prefill) for p in prompts]
        check_lengths(self.settings, self.tokenizer, texts, sampling.max_new_tokens, "prompt")
        params = SamplingParams(
            n=n, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens, **NEUTRAL
        )  # unseeded: the stage's torch seed drives the engine's sampler (models/vllm_engine.py)
        vllm_engine.wake(self.model)
        lora = self._live_request() if self.live else self.requests.get(self.adapter)
        outputs = self.model.fast_generate(
            texts,
            sampling_params=params,
            lora_request=lora,
            use_tqdm=len(texts) > 64,
            tokenization_kwargs={"add_special_tokens": False},  # the chat template holds them already, as on hf
        )
        stop = stop_ids(self.tokenizer, getattr(self.model, "generation_config", None))
        return [
            [
                Completion.of(sampling.prefill + o.text, o.finish_reason == "length", o.token_ids, stop)
                for o in out.outputs
            ]
            for out in outputs
        ]

    def _live_request(self):
        """The request for the LoRA as it is now: built at the first sampling call after an optimizer
        step (`to_training` drops the old one) and reused by the step's other calls."""
        if getattr(self.model, LIVE_REQUEST, None) is None:
            setattr(self.model, LIVE_REQUEST, self.model.load_lora(vllm_engine.live_lora_path(), load_tensors=True))
        return getattr(self.model, LIVE_REQUEST)

    @contextlib.contextmanager
    def _adapter_in_slot(self):
        FastLanguageModel.for_inference(self.model)
        try:
            if self.live:
                yield
            elif self.adapter is None:
                with self.model.disable_adapter():
                    yield
            else:
                set_peft_model_state_dict(self.model, load_file(str(Path(self.adapter) / "adapter_model.safetensors")))
                yield
        finally:
            FastLanguageModel.for_training(self.model)
