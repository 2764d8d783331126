"""The recipe's `model` section: the policy model, its backend, its LoRA adapter and an optional vLLM server."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rwml_lite.config.section import Section


class LoraSettings(Section):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Names of the linear layers that get LoRA adapters.",
    )
    last_layers: int | None = Field(
        None,
        gt=0,
        description="LoRA in the last N decoder layers only (null = every layer): backward then stops N layers "
        "deep, which makes CPU training several times faster.",
    )

    def layers(self, num_layers: int) -> list[int] | None:
        """The decoder layers that get LoRA (PEFT's layers_to_transform), None for all."""
        return None if self.last_layers is None else list(range(max(num_layers - self.last_layers, 0), num_layers))


class ServerSettings(Section):
    """A vLLM server on GPUs of its own (`vllm serve --enable-lora`, or `trl vllm-serve` with those flags) that
    every stage samples through, over its OpenAI-compatible API."""

    url: str = Field(description="Base URL of the server, e.g. http://localhost:8000 (its API is at /v1).")
    model: str | None = Field(None, description="The served model's name; null = model.name_or_path.")
    timeout: float = Field(600.0, gt=0, description="Seconds to wait for one completion request.")


class ModelSettings(Section):
    name_or_path: str = Field(
        description="Policy model: a Hub id, a local folder, a .gguf file, or pkg:PACKAGE/FILE "
        "for a file shipped inside an installed Python package."
    )
    backend: Literal["hf", "unsloth"] = Field(
        "hf",
        description="hf = transformers + peft (CPU or GPU); unsloth = Unsloth kernels + in-process vLLM (one GPU).",
    )
    load_in_4bit: bool = Field(
        False, description="Quantize the base weights to 4-bit NF4 with bitsandbytes (QLoRA); needs a GPU for speed."
    )
    fast_inference: bool = Field(
        True,
        description="unsloth only: generate with vLLM sharing the trainer's weights (needs the vllm package and a GPU).",
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="unsloth + vLLM only: share of GPU memory vLLM may claim (weights + KV cache)."
    )
    max_seq_length: int = Field(
        4096, gt=0, description="Longest prompt + completion in tokens (sizes vLLM's context and the memory plan)."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype; auto = the checkpoint's own dtype."
    )
    generation_batch_size: int = Field(
        16, gt=0, description="Prompts per generate call when sampling rollouts, filter and eval predictions."
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in backward: less memory, ~30% more compute (off for CPU demos)."
    )
    optimizer: Literal["adamw_torch", "adamw_8bit"] = Field(
        "adamw_torch", description="Optimizer of the LoRA weights; adamw_8bit (bitsandbytes) keeps its state in 8 bits."
    )
    chat_template: str | None = Field(
        None,
        description="The chat template to use instead of the model's own: 'qwen3' (Qwen3's, as TRL ships it: native "
        "tool calls and <think>) or a .jinja file; null = the model's. For tau2, whose prompts carry tools, with "
        "models whose template has no tool calls (SmolLM2).",
    )
    offload_layers: int | Literal["auto"] | None = Field(
        None,
        description="unsloth without vLLM only: decoder layers whose frozen weights stay in pinned CPU RAM and are "
        "copied to the GPU as each layer runs (Unsloth's block swap, for models larger than the GPU); 'auto' = as "
        "few as Unsloth's planner finds a training step needs at load (it does not count the generation batch's KV "
        "cache: prefer the count `rwml-lite plan` sizes); null or 0 = none. Every forward pass copies them across "
        "PCIe, once per decode step of a batch: `rwml-lite plan` shows the bytes and the time.",
    )
    server: ServerSettings | None = Field(
        None,
        description="hf backend only: every stage samples from this vLLM server instead of this process (collect, "
        "the filter and eval with the saved adapters, GRPO and the policy stage with the LoRA of each step, loaded "
        "there by path through /v1/load_lora_adapter); null = sample here.",
    )
    lora: LoraSettings | None = Field(
        default_factory=LoraSettings,
        description="LoRA adapter settings; null = full fine-tuning (the paper's setting; hf backend, unquantized "
        "weights): every weight trains, and each trained stage saves a whole model where a LoRA stage saves its "
        "adapter.",
    )

    @model_validator(mode="after")
    def _full_fine_tuning_trains_16_bit_weights_here(self) -> ModelSettings:
        if self.lora is not None:
            return self
        conflicts = [
            (self.backend == "unsloth", "model.backend=unsloth (its fast path shares LoRA weights with vLLM)"),
            (self.load_in_4bit, "model.load_in_4bit (quantized weights do not train)"),
            (self.server is not None, "model.server (only a LoRA adapter travels to the server, by path)"),
        ]
        if any(bad for bad, _ in conflicts):
            raise ValueError(
                "model.lora is null (full fine-tuning), which runs on the hf backend with unquantized weights sampled "
                "in this process; it cannot go with " + " or ".join(why for bad, why in conflicts if bad) + ". Set "
                "model.lora to a LoRA section, or change those fields"
            )
        return self

    @model_validator(mode="after")
    def _a_server_serves_the_hf_backend(self) -> ModelSettings:
        if self.server and self.backend != "hf":
            raise ValueError(
                "model.server samples from a vLLM server of its own, and model.backend=unsloth samples from the vLLM "
                "engine that shares its trainer's weights in this process; set model.backend=hf, or drop model.server"
            )
        return self

    @field_validator("offload_layers", mode="before")
    @classmethod
    def _a_count_or_auto(cls, value: Any) -> Any:
        if value is None or value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError("must be a number of layers (0 or more), 'auto', or null")

    @model_validator(mode="after")
    def _offloading_runs_on_unsloth_without_vllm(self) -> ModelSettings:
        n = self.offload_layers
        if not n:
            return self
        if self.backend != "unsloth":
            raise ValueError(
                f"model.offload_layers={n!r} is Unsloth's block swap, and model.backend is {self.backend!r}: set "
                "model.backend=unsloth (a GPU), or drop model.offload_layers"
            )
        if self.fast_inference:
            raise ValueError(
                f"model.offload_layers={n!r} cannot run with model.fast_inference=true: vLLM would sample from the "
                "weights Unsloth moved to CPU RAM (Unsloth refuses the pair). Set model.fast_inference=false to "
                "sample with Unsloth's own generation on the offloaded model, or drop model.offload_layers"
            )
        if not self.gradient_checkpointing:
            raise ValueError(
                f"model.offload_layers={n!r} needs model.gradient_checkpointing=true: without it every offloaded "
                "layer stays on the GPU until backward and nothing is saved"
            )
        return self
