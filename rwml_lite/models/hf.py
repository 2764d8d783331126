"""transformers + peft backend: load a policy (optionally with a LoRA adapter) and sample from it.

Runs on CPU (the demo and tests) and on one GPU. Prompts are rendered with the tokenizer's chat
template and padded on the left so that a batch of prompts of different lengths decodes together;
each prompt gets its n completions from one `generate` call (`num_return_sequences`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from rich.progress import track

from rwml_lite.config import LoraSettings, ModelSettings
from rwml_lite.distributed import local_device
from rwml_lite.errors import RwmlError
from rwml_lite.models import NEUTRAL, Completion, Sampling, stop_ids, use_chat_template
from rwml_lite.prompts import Messages, template_args
from rwml_lite.sources import checkpoint_folder


def load_policy(settings: ModelSettings, adapter: Path | None = None):
    """(model, tokenizer) for the recipe's model, with the LoRA adapter at `adapter` attached."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = checkpoint_folder(settings.name_or_path)
    whole = adapter is not None and not is_adapter(adapter)  # a stage trained by full fine-tuning
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(
            adapter if whole else folder, dtype=settings.dtype, **_quantization(settings)
        )
    except OSError as e:
        raise RwmlError(
            f"Could not load model `{settings.name_or_path}` (model.name_or_path): {e}. Use a Hub id "
            f"(needs a network connection or the Hub cache), a local checkpoint folder, a .gguf file "
            f"or pkg:PACKAGE/FILE."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    use_chat_template(tokenizer, settings)
    if tokenizer.chat_template is None:
        raise RwmlError(
            f"Model `{settings.name_or_path}` has no chat template; rwml-lite builds every prompt with one. "
            f"Use an instruct/chat model."
        )
    if not settings.load_in_4bit:  # bitsandbytes places quantized weights itself
        model.to(local_device())
    if adapter is not None and not whole:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer


def is_adapter(folder: Path) -> bool:
    """Whether a trained stage's folder holds a LoRA adapter (else the whole model: full fine-tuning)."""
    return (Path(folder) / "adapter_config.json").exists()


def _quantization(settings: ModelSettings) -> dict:
    if not settings.load_in_4bit:
        return {}
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if local_device().type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute
    )
    return {"quantization_config": config, "device_map": {"": local_device()}}


def generator(settings: ModelSettings, adapter: Path | None = None) -> HFGenerator:
    """Sampling from the base model, or from it with the saved LoRA adapter at `adapter`."""
    model, tokenizer = load_policy(settings, adapter)
    return HFGenerator(model, tokenizer, settings.generation_batch_size)


def trainable_policy(settings: ModelSettings, seed: int):
    """(base model, tokenizer, LoRA config): the TRL trainer wraps the model in a fresh adapter,
    before it seeds anything itself, so the generator is seeded here for that initialisation. With
    full fine-tuning (model.lora null) the config is None and TRL trains every weight."""
    model, tokenizer = load_policy(settings)
    torch.manual_seed(seed)
    return model, tokenizer, lora_config(settings.lora, model.config.num_hidden_layers) if settings.lora else None


def policy_model(settings: ModelSettings, seed: int, adapter: Path | None = None):
    """(LoRA model, tokenizer) for the policy stage's own loop: the saved adapter at `adapter`
    trained further, or a fresh LoRA initialised from `seed`; with full fine-tuning, the base model
    or the trained stage's whole model at `adapter`, every weight trainable."""
    from peft import PeftModel, get_peft_model

    if settings.lora is None:
        model, tokenizer = load_policy(settings, adapter)
        model.requires_grad_(True)
    elif adapter is None:
        model, tokenizer = load_policy(settings)
        torch.manual_seed(seed)
        model = get_peft_model(model, lora_config(settings.lora, model.config.num_hidden_layers))
    else:
        model, tokenizer = load_policy(settings)
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model, tokenizer


def live_generator(model, tokenizer, settings: ModelSettings) -> HFGenerator:
    """Sampling from the policy as it trains: the model object itself, LoRA included."""
    return HFGenerator(model, tokenizer, settings.generation_batch_size)


def to_training(model) -> None:
    model.train()


def training_overrides(settings: ModelSettings) -> dict:
    return {"gradient_checkpointing": settings.gradient_checkpointing}


def lora_config(settings: LoraSettings, num_layers: int):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        layers_to_transform=settings.layers(num_layers),
        task_type="CAUSAL_LM",
    )


def render_prompt(tokenizer, prompt: Messages, prefill: str = "") -> str:
    """The chat-template text the model continues: the conversation (with the tools and options it
    carries, `prompts.with_template_args`), the assistant header, the prefill."""
    messages, kwargs = template_args(prompt)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs) + prefill


class HFGenerator:
    """`Generator` over a transformers model; `batch_size` counts sequences per generate call."""

    def __init__(self, model, tokenizer, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    @torch.no_grad()
    def generate(self, prompts: list[Messages], n: int, sampling: Sampling) -> list[list[str]]:
        tok = self.tokenizer
        tok.padding_side = "left"
        per_call = max(1, self.batch_size // n)
        greedy = sampling.temperature == 0
        sampling.require_distinct(n)
        results: list[list[str]] = []
        was_training = self.model.training
        self.model.eval()
        starts = range(0, len(prompts), per_call)
        # Long sampling jobs (filter predictions, world-model scores) get a progress bar; one call does not.
        for start in track(
            starts, description=f"sampling {len(prompts)} x {n}", transient=True, disable=len(starts) < 3
        ):
            texts = [render_prompt(tok, p, sampling.prefill) for p in prompts[start : start + per_call]]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            # neutral sampling, whatever the model's generation_config.json sets (the loss assumes the plain softmax);
            # min_p None rather than 0: transformers would add a min-p step that sorts the vocabulary at every token
            neutral = {**NEUTRAL, "min_p": None}
            sample_args = {} if greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p, **neutral}
            out = self.model.generate(
                **enc,
                **sample_args,
                do_sample=not greedy,
                max_new_tokens=sampling.max_new_tokens,
                num_return_sequences=n,
                pad_token_id=tok.pad_token_id,
            )
            new = out[:, enc["input_ids"].shape[1] :]
            stop = stop_ids(tok, self.model.generation_config)
            ended = torch.isin(new, torch.tensor(sorted(stop), device=new.device)).any(dim=1).tolist()  # padding too
            decoded = [
                Completion.of(sampling.prefill + text, not end, ids, stop)
                for text, end, ids in zip(tok.batch_decode(new, skip_special_tokens=True), ended, new.tolist())
            ]
            results.extend(decoded[i * n : (i + 1) * n] for i in range(len(texts)))
        self.model.train(was_training)
        return results
