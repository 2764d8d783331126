"""What a failed Unsloth load means for the recipe: the field to change and how.

Unsloth, vLLM and PEFT raise RuntimeError, ValueError, NotImplementedError, ImportError, TypeError,
AssertionError, MemoryError or OSError at load, often with several lines written for a notebook
user and without naming anything a recipe has. Every one of them reaches our user as one paragraph
that names the recipe field and the fix, followed by the library's own words on one line. The rules
are matched on the pinned libraries' messages (unsloth 2026.10.9, unsloth_zoo 2026.10.9, vllm 0.30,
peft 0.21); anything they do not cover still names the fields that select the load path.
"""

from __future__ import annotations

import re

from rwml_lite.config import ModelSettings
from rwml_lite.errors import RwmlError

GPU_INSTALL = "pip install -e '.[gpu]'"
BNB_PLUGIN = "vllm-bnb-plugin==0.0.3"
#: LoRA ranks vLLM serves (Unsloth rounds model.lora.r up to the next one, and refuses above the last).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)

#: (pattern in the library's message, what to tell the user); the first match wins.
RULES: list[tuple[str, str]] = [
    (
        r"does not fit in gpu memory",
        "the weights do not fit the GPU: keep more decoder layers in CPU RAM with model.offload_layers (and "
        "model.fast_inference=false; `rwml-lite plan RECIPE` sizes it and shows what crosses PCIe), set "
        "model.load_in_4bit=true, or pick a smaller model.",
    ),
    (
        r"from_pretrained\(offload_layers|offload_layers needs|offload_layers cannot|offload_layers has nothing|"
        r"unexpected keyword argument 'offload_layers'",
        "model.offload_layers (Unsloth's block swap) cannot run here: it copies layers over CUDA streams, so it "
        "needs a discrete NVIDIA or ROCm GPU (Unsloth's CPU fallback does not take the argument), with "
        "model.fast_inference=false, model.gradient_checkpointing=true and 16-bit or 4-bit weights. Drop "
        "model.offload_layers, or run on such a GPU.",
    ),
    (
        r"vllm-bnb-plugin|bitsandbytes out of tree",
        "model.load_in_4bit with model.fast_inference needs vLLM's bitsandbytes plugin, which is not installed: "
        f"`pip install {BNB_PLUGIN}` (or `{GPU_INSTALL}`), or set model.fast_inference=false to sample with "
        "Unsloth's HF generation, or model.load_in_4bit=false to load 16-bit weights.",
    ),
    (
        r"install vllm|vllm is not installed|no module named 'vllm",
        f"model.fast_inference=true needs the vllm package: `{GPU_INSTALL}`, or set model.fast_inference=false.",
    ),
    (
        r"needs a gpu|cannot find any torch accelerator",
        "model.fast_inference=true (vLLM) needs an NVIDIA GPU that torch can use: run on one, or set "
        "model.fast_inference=false, or model.backend=hf (transformers + peft, runs on the CPU).",
    ),
    (
        r"lora ranks? of|max_lora_rank|lora rank",
        f"model.lora.r is not a rank vLLM serves: use one of {', '.join(map(str, VLLM_LORA_RANKS))}, or set "
        "model.fast_inference=false.",
    ),
    (
        r"target modules?.*not found|target_modules",
        "model.lora.target_modules names layers this model does not have: list its linear layers (for Qwen and "
        "Llama: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).",
    ),
    (
        r"trust_remote_code",
        "model.name_or_path needs its own remote code, which vLLM sampling does not run: set "
        "model.fast_inference=false, or pick a model that transformers supports natively.",
    ),
    (
        r"expandable_segments",
        "vLLM's standby (set by model.fast_inference) cannot run with PyTorch's expandable segments: remove "
        "`expandable_segments:True` from PYTORCH_ALLOC_CONF / PYTORCH_CUDA_ALLOC_CONF, or set UNSLOTH_VLLM_STANDBY=0 "
        "(the KV cache then stays allocated while training; `rwml-lite plan` counts it).",
    ),
    (
        r"memory profiling|another process sharing this gpu",
        "another process changed the GPU's free memory while vLLM measured it (model.gpu_memory_utilization is "
        "not the cause): run again with the GPU to yourself.",
    ),
    (
        r"flashinfer|nvcc|ninja|cuda_home",
        "vLLM's kernels could not be built on this machine (model.fast_inference): install the CUDA toolkit "
        "(nvcc) and ninja, or use the Dockerfile's image, or set model.fast_inference=false.",
    ),
    (
        r"memoryerror|out of memory|not enough memory|no available memory|kv cache",
        "the model does not fit the GPU at model.gpu_memory_utilization and model.max_seq_length: lower "
        "model.max_seq_length or model.generation_batch_size, set model.load_in_4bit=true, or change "
        "model.gpu_memory_utilization; `rwml-lite plan RECIPE` shows where the memory goes.",
    ),
    (
        r"\brope\b|rope_scaling|rope scaling",
        "model.max_seq_length exceeds the model's own context and vLLM cannot stretch it (RoPE scaling): lower "
        "model.max_seq_length, or set model.fast_inference=false.",
    ),
    (
        r"compute capability|sm[_ ]?\d\d|too old",
        "this GPU is too old for vLLM's kernels: set model.fast_inference=false.",
    ),
    (
        r"dtype",
        "model.dtype is not one this GPU or vLLM supports: set model.dtype=bfloat16 (Ampere or newer) or float16.",
    ),
    (
        r"failed to load model|not a valid model identifier|does not appear to have|repository not found|repo id|repo_name|"
        r"is not a local folder|no such file|not supported yet|unrecognized configuration|architecture",
        "model.name_or_path is not a checkpoint Unsloth can load: use a Hub id (needs a network connection or the "
        "Hub cache), or a local folder with config.json and weights of a model transformers supports.",
    ),
]


def explain_load_error(error: BaseException, settings: ModelSettings) -> RwmlError:
    """The RwmlError to raise for `error` from Unsloth's from_pretrained / get_peft_model."""
    said = " ".join(str(error).split())
    matched = f"{type(error).__name__}: {said}"  # a MemoryError may come without a message
    advice = next((text for pattern, text in RULES if re.search(pattern, matched, re.IGNORECASE)), None)
    if advice is None:
        advice = (
            f"the load path chosen by model.load_in_4bit={settings.load_in_4bit}, model.fast_inference="
            f"{settings.fast_inference}, model.dtype={settings.dtype} and model.max_seq_length="
            f"{settings.max_seq_length} failed: try model.fast_inference=false, then model.backend=hf, and report "
            "the message below if the hf backend loads it."
        )
    return RwmlError(
        f"Unsloth could not load `{settings.name_or_path}` (model.name_or_path): {advice} Unsloth said: {matched[:600]}"
    )
