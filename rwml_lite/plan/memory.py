"""Memory plan: what a recipe needs on one GPU (and in CPU RAM), part by part, and whether it fits.

The run has phases that hold different things at once (those of the recipe's `stages`):
  generation (collect, filter predictions, GRPO groups, policy episodes, eval): weights + LoRA state + embedder + KV cache
  filter SFT, WM SFT: weights + LoRA state + activations + logits of a batch of prompt+target sequences
  RWML GRPO: weights + LoRA state + embedder + activations + logits of one micro batch of completions
  Policy RL: weights + LoRA state + activations + log-probs of one micro batch of agent turns
rwml-lite puts the vLLM engine to sleep before each of its trainers (the filter's SFT and GRPO) and
wakes it to sample; under Unsloth's standby sleeping keeps the shared weights and frees the KV
cache, so the peak is the largest phase. With UNSLOTH_VLLM_STANDBY=0 the engine cannot sleep and
the KV cache stays through training.

The terms are arithmetic on the model's shapes, anchored where published or measured figures
exist (`ANCHORS`; `rwml-lite plan --anchors` prints the error of the estimate against each):
- weights: NF4 = 0.5 byte/param + double-quantized block scales; embeddings and lm_head stay bf16;
- LoRA: fp32 weights and gradients + the optimizer's state (AdamW 8 bytes/param, 8-bit AdamW 2);
- activations: Unsloth's checkpointing keeps each layer's input in CPU RAM, so the GPU holds one
  layer's recompute; transformers' checkpointing keeps every layer's input on the GPU;
- logits: fp32 log-probs over the vocabulary for the completion tokens; TRL materialises them for
  the whole micro batch, Unsloth one sequence at a time (Unsloth's GRPO post: "GRPO loss 9.8 vs
  78.3 GB" at 20K context, 8 generations, Llama-3.1-8B: exactly that ratio);
- KV cache: 2 x layers x kv_heads x head_dim x 2 bytes per token, for `generation_batch_size`
  sequences of `max_seq_length` tokens (without vLLM at least one GRPO step's batch x group); vLLM instead reserves `gpu_memory_utilization` of the GPU
  at start and fills what the weights leave with KV cache, so the plan counts that reservation.
- offloaded layers (`model.offload_layers`, Unsloth's block swap): their frozen weights live in
  pinned CPU RAM and the GPU keeps a pool of `BLOCK_SWAP_SLOTS` layers they are copied into as they
  run; what crosses PCIe, and the time it costs, is `plan/throughput.py`'s.
CPU RAM (unsloth backend): the offloaded layers, the layer inputs Unsloth's checkpointing keeps
there for backward, and an allowance for the process itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from rwml_lite.config import ModelSettings, Recipe
from rwml_lite.distributed import world
from rwml_lite.errors import RwmlError
from rwml_lite.plan.remedies import open_remedies
from rwml_lite.plan.result import Plan
from rwml_lite.plan.shapes import BYTES, GIB, SMALL_EMBEDDER_GIB, Architecture, architecture

# Measured on an H100 (torch 2.11, bench/gpu_peak.py): memory outside PyTorch's allocator (CUDA
# context, cuBLAS and Triton workspaces) 0.83 GiB; the allocator's cache above the live tensors at
# the peak (reserved - allocated) 0.44 and 0.58 GiB.
CUDA_CONTEXT_GIB = 0.83
ALLOCATOR_SLACK_GIB = 0.5
VLLM_RUNTIME_GIB = 1.5  # vLLM's CUDA graphs, sampler and activation peak beside its KV cache
#: GPU slots of Unsloth's block swap: the running layer + prefetch depth 2 (unsloth_zoo's fixed pool)
BLOCK_SWAP_SLOTS = 3
#: Bytes per parameter of a 4-bit layer that the swap moves: the packed NF4 data; the quantization
#: scales stay on the GPU (unsloth_zoo's build_host_layers)
NF4_DATA_BYTES = 0.5
#: CPU RAM of the process itself (Python, torch, CUDA libraries, tokenizer, environments): a rough
#: allowance, not yet measured on a GPU machine
HOST_RUNTIME_GIB = 6.0

#: Adam state bytes per trainable parameter
OPTIMIZER_BYTES = {"adamw_torch": 8, "adamw_8bit": 2}


def vllm_sleeps_while_training(settings: ModelSettings) -> bool:
    """Whether the recipe's vLLM engine frees its KV cache while our trainers run: Unsloth builds it able to sleep
    (models.prepare_backend sets UNSLOTH_VLLM_STANDBY=1, models/vllm_engine.py sleeps it) unless the user set
    UNSLOTH_VLLM_STANDBY=0."""
    standby = os.environ.get("UNSLOTH_VLLM_STANDBY", "1")
    return settings.backend == "unsloth" and settings.fast_inference and standby != "0"


@dataclass(frozen=True)
class Sizing:
    """What every part's arithmetic reads: the recipe, its model's shapes, the decoder layers offloaded to CPU
    RAM, the trainer processes (one GPU each)."""

    recipe: Recipe
    arch: Architecture
    offloaded: int
    processes: int

    @property
    def unsloth(self) -> bool:
        return self.recipe.model.backend == "unsloth"

    @property
    def vllm(self) -> bool:
        return self.unsloth and self.recipe.model.fast_inference

    @property
    def weight_dtype(self) -> str:
        return "bfloat16" if self.recipe.model.dtype in ("auto", "bfloat16", "float16") else "float32"

    @property
    def linear_bytes(self) -> float:
        return BYTES["4bit"] if self.recipe.model.load_in_4bit else BYTES[self.weight_dtype]

    @property
    def swapped(self) -> float:
        """Bytes of one offloaded layer in CPU RAM."""
        return self.arch.layer_params * (NF4_DATA_BYTES if self.recipe.model.load_in_4bit else self.linear_bytes)

    @property
    def slots(self) -> int:
        return min(self.offloaded, BLOCK_SWAP_SLOTS)

    @property
    def trained(self) -> str:
        """The name of the trained state's part."""
        return "LoRA + optimizer" if self.recipe.model.lora else "gradients + optimizer"

    @property
    def trainable(self) -> int:
        m = self.recipe.model
        if m.lora is None:  # full fine-tuning
            return self.arch.params
        return self.arch.lora_params(m.lora.r, m.lora.target_modules, m.lora.last_layers)

    @property
    def seq(self) -> int:
        return self.recipe.model.max_seq_length

    @property
    def adapted(self) -> int:
        """Decoder layers backward reaches: it stops at the lowest LoRA layer."""
        lora = self.recipe.model.lora
        last = lora.last_layers if lora else None
        return min(self.arch.layers, last or self.arch.layers)

    def activations(self, sequences: int) -> float:
        tokens = sequences * self.seq
        per_layer = self.arch.activation_bytes_per_token_layer
        if not self.recipe.model.gradient_checkpointing:
            return tokens * per_layer * self.adapted
        kept = 0 if self.unsloth else tokens * self.arch.hidden * 2 * self.adapted  # Unsloth keeps them in CPU RAM
        return kept + tokens * per_layer

    def sft_micro(self, settings) -> int:
        """Sequences per forward/backward pass of an SFT stage on each process."""
        return settings.micro_batch_size or settings.batch_size // self.processes

    def logits(self, sequences: int, tokens_each: int) -> float:
        # fp32 log-probs and their gradient
        return (1 if self.unsloth else sequences) * tokens_each * self.arch.vocab * 4 * 2


# ---------------------------------------------------------------- the parts, one function each (bytes or GiB)


def weights_bytes(s: Sizing) -> float:
    """The weights on the GPU: with offloading, the layers kept there + the swap's slots (an offloaded layer's
    quantization scales stay)."""
    arch, offloaded, swapped = s.arch, s.offloaded, s.swapped
    layer_bytes = arch.layer_params * s.linear_bytes
    return (
        (arch.layers - offloaded) * layer_bytes
        + offloaded * (layer_bytes - swapped)  # an offloaded layer's scales stay
        + s.slots * swapped
        + arch.embedding_params * BYTES[s.weight_dtype]
    )


def trained_state_bytes(s: Sizing) -> float:
    """LoRA weights, gradients and optimizer state (+ vLLM's LoRA copy); under full fine-tuning gradients in the
    weights' dtype, Adam's states too (8-bit: 2 bytes)."""
    m, trainable = s.recipe.model, s.trainable
    if m.lora is None:
        states = 2 * BYTES[s.weight_dtype] if m.optimizer == "adamw_torch" else OPTIMIZER_BYTES[m.optimizer]
        return trainable * (BYTES[s.weight_dtype] + states)
    return trainable * (4 + 4 + OPTIMIZER_BYTES[m.optimizer]) + (trainable * 2 if s.vllm else 0)  # + vLLM


def embedder_gib(s: Sizing) -> float:
    emb = s.recipe.reward
    try:
        emb_arch = architecture(emb.embedder)
        embedder = emb_arch.params * BYTES[emb.precision]
        embedder += emb.batch_size * 256 * 2 * (4 * emb_arch.hidden + emb_arch.intermediate)  # one layer's forward
        return embedder / GIB
    except RwmlError:
        return SMALL_EMBEDDER_GIB


def generation_kv_bytes(s: Sizing) -> float:
    """The KV cache of one generate call without vLLM (`vllm_kv_cache` replaces it under vLLM). Without vLLM, TRL
    samples a process's share of a GRPO step (batch x group sequences) in one generate call; the SFT batches are
    split among the processes too (accelerate launch)."""
    m, g = s.recipe.model, s.recipe.grpo
    share = g.batch_size * g.group_size // s.processes
    sequences = m.generation_batch_size if s.vllm else max(m.generation_batch_size, share)
    # a server samples every stage; transformers' cache takes the weights' dtype (vLLM's: bf16)
    if m.server:
        return 0
    return s.arch.kv_bytes_per_token * s.seq * sequences * (1 if s.vllm else BYTES[s.weight_dtype] / 2)


def vllm_kv_cache(s: Sizing, gpu_gib: float, weights_gib: float) -> tuple[float, int]:
    """(GiB, sequences of max_seq_length): vLLM reserves its whole share at start, and whatever the weights and
    runtime leave becomes KV cache."""
    budget = max(s.recipe.model.gpu_memory_utilization * gpu_gib - weights_gib - VLLM_RUNTIME_GIB, 0.0)
    return budget, int(budget * GIB // (s.arch.kv_bytes_per_token * s.seq))


def dequantized_experts_gib(s: Sizing) -> float:
    """Unsloth runs 4-bit experts by dequantizing the layer's whole stack to bf16 (its routed kernel avoids that
    only for small decode batches): a transient the size of one layer's experts."""
    return 3 * s.arch.experts * s.arch.hidden * s.arch.intermediate * 2 / GIB


def reference_parts(s: Sizing, weights_gib: float) -> dict[str, float]:
    """The KL references and DDP's buckets, where the recipe needs them."""
    m, g, p, trainable = s.recipe.model, s.recipe.grpo, s.recipe.policy, s.trainable
    parts = {}
    # PEFT's reference model is the base under the disabled adapter; full fine-tuning needs a copy
    if m.lora is None and g.beta > 0:
        parts["reference model (GRPO beta > 0)"] = weights_gib
    # the policy stage's KL reference when it is not the base under the disabled adapter (train/policy.Reference):
    # under full fine-tuning a bf16 copy of the model; else the starting adapter kept, and the adapter being
    # trained set aside while the reference's pass runs
    if p.beta > 0 and (p.start != "base" or m.lora is None):
        parts["policy reference (the starting weights)"] = (
            s.arch.params * 2 if m.lora is None else 2 * trainable * 4
        ) / GIB
    # DDP (TRL's trainers under accelerate) keeps its own gradient buckets beside .grad (accelerate's
    # default gradient_as_bucket_view=False); the policy loop sums .grad itself
    if s.processes > 1:
        parts["DDP gradient buckets"] = trainable * (BYTES[s.weight_dtype] if m.lora is None else 4) / GIB
    return parts


def _policy_logprobs(s: Sizing, sequences: int) -> float:
    """The policy stage's own loop takes log-probs of every reply token of a micro batch at once, in the logits'
    dtype (train/turns.reply_logps): the logits, their temperature-scaled copy and log-softmax's saved output,
    3 x 2 bytes per vocabulary entry in bf16."""
    return sequences * (s.recipe.agent.max_new_tokens + 1) * s.arch.vocab * 3 * BYTES[s.weight_dtype]


@dataclass(frozen=True)
class Phase:
    """A training phase: whether the recipe runs it, its activations part, the sequences of one micro batch on each
    process, the bytes of that micro batch's logits, the parts it holds beside the common ones and its own (each
    where the plan has it; the KV cache only where the engine cannot sleep), and whether the embedder is loaded."""

    part: str
    runs: Callable[[Recipe], bool]
    micro_batch: Callable[[Sizing], int]
    logits: Callable[[Sizing, int], float]
    held: tuple[str, ...]
    embedder: bool = True

    def activations_bytes(self, s: Sizing) -> float:
        sequences = self.micro_batch(s)
        return s.activations(sequences) + self.logits(s, sequences)


#: The training phases (stages), in pipeline order; the generation phase before them holds the common parts and
#: the KV cache. The engine sleeps through our trainers (standby, our default); transformers' generate frees its
#: cache when it returns. The policy stage scores episodes by task success: no embedder is loaded.
PHASES = {
    "filter SFT": Phase(
        "filter SFT activations + logits",
        lambda r: "filter" in r.stages and r.worldmodel.filter.enabled,
        lambda s: s.sft_micro(s.recipe.worldmodel.filter),
        lambda s, n: s.logits(n, s.seq),
        ("KV cache", "DDP gradient buckets"),
    ),
    "RWML GRPO": Phase(
        "GRPO activations + logits",
        lambda r: "rwml" in r.stages,
        lambda s: s.recipe.grpo.micro_batch_size,
        lambda s, n: s.logits(n, s.recipe.grpo.max_completion_length),
        ("reference model (GRPO beta > 0)", "KV cache", "DDP gradient buckets"),
    ),
    "WM SFT": Phase(
        "WM SFT activations + logits",
        lambda r: "wm_sft" in r.stages,
        lambda s: s.sft_micro(s.recipe.wm_sft),
        lambda s, n: s.logits(n, s.seq),
        ("KV cache", "DDP gradient buckets"),
    ),
    "Policy RL": Phase(
        "policy activations + logits",
        lambda r: "policy" in r.stages,
        lambda s: s.recipe.policy.micro_batch_size,
        _policy_logprobs,
        ("policy reference (the starting weights)", "KV cache"),
        embedder=False,
    ),
}


# ---------------------------------------------------------------- the plan


def estimate(recipe: Recipe, gpu_gib: float, processes: int | None = None) -> Plan:
    """The plan of `recipe` on each GPU of `gpu_gib`, for `processes` trainer processes (one GPU each,
    `accelerate launch`; default: this launch's). With model.offload_layers='auto' Unsloth picks the
    count at load from the free memory; the plan takes the fewest layers with which the recipe fits."""
    processes = processes or world()
    arch, wanted = architecture(recipe.model.name_or_path), recipe.model.offload_layers or 0
    if wanted != "auto":
        return _estimate(recipe, gpu_gib, wanted, arch, processes)
    for n in range(arch.layers + 1):
        plan = _estimate(recipe, gpu_gib, n, arch, processes)
        if plan.fits:
            break
    assumed = "the fewest with which the recipe fits" if plan.fits else "all of them, and the recipe still does not fit"
    plan.notes.append(
        f"model.offload_layers='auto': Unsloth decides at load from the GPU's free memory, sized for a training "
        f"step, not for the generation batch's KV cache; this plan assumes {plan.offloaded_layers}, {assumed} "
        f"{gpu_gib:.0f} GiB."
    )
    return plan


def _estimate(recipe: Recipe, gpu_gib: float, offloaded: int, arch: Architecture, processes: int = 1) -> Plan:
    """The plan with `offloaded` decoder layers in CPU RAM: every part (one function each), the phases that hold
    them (`PHASES`), what lives in CPU RAM, and the notes."""
    m, s = recipe.model, Sizing(recipe, arch, offloaded, processes)
    if offloaded > arch.layers:
        raise RwmlError(
            f"model.offload_layers={offloaded} but {m.name_or_path} has {arch.layers} decoder layers: offload at "
            f"most {arch.layers}, or 'auto'."
        )
    parts = {
        "weights": weights_bytes(s) / GIB,  # with offloading: the layers kept on the GPU + the swap's slots
        s.trained: trained_state_bytes(s) / GIB,
        "embedder": embedder_gib(s),
        "CUDA context + allocator cache": CUDA_CONTEXT_GIB + ALLOCATOR_SLACK_GIB,
        "KV cache": generation_kv_bytes(s) / GIB,
        **{phase.part: phase.activations_bytes(s) / GIB for phase in PHASES.values()},
    }
    common = ["weights", s.trained, "embedder", "CUDA context + allocator cache"]
    if s.unsloth and m.load_in_4bit and arch.experts:
        parts["4-bit experts dequantized (one layer)"] = dequantized_experts_gib(s)
        common.append("4-bit experts dequantized (one layer)")
    kv_through_training = s.vllm and not vllm_sleeps_while_training(m)
    kv_sequences = None
    if s.vllm:
        parts["vLLM runtime"] = VLLM_RUNTIME_GIB
        common.append("vLLM runtime")
        parts["KV cache"], kv_sequences = vllm_kv_cache(s, gpu_gib, parts["weights"])
    parts.update(reference_parts(s, parts["weights"]))
    phases = {"generation": common + ["KV cache"]}
    for name, phase in PHASES.items():
        if phase.runs(recipe):
            held = [p for p in phase.held if p in parts and (p != "KV cache" or kv_through_training)]
            phases[name] = [c for c in common if phase.embedder or c != "embedder"] + [phase.part] + held
    host = _host_parts(s, phases) if s.unsloth else {}
    parts.update(host)
    parts = {k: v for k, v in parts.items() if any(k in held for held in phases.values())}
    notes = _notes(s, kv_sequences, kv_through_training)
    remedies = open_remedies(recipe)
    return Plan(gpu_gib, parts, phases, kv_sequences, notes, remedies, set(host), offloaded, s.swapped, s.linear_bytes)


def _host_parts(s: Sizing, phases: dict[str, list[str]]) -> dict[str, float]:
    """CPU RAM (unsloth backend): the process, the offloaded layers, Unsloth's checkpointed layer inputs; each is
    added to the phases that hold it."""
    host_parts = {"CPU: runtime (rough)": HOST_RUNTIME_GIB}
    if s.offloaded:
        host_parts["CPU: offloaded layers (pinned)"] = s.offloaded * s.swapped / GIB
    for phase in phases:
        phases[phase] += list(host_parts)
    for name, phase in PHASES.items():
        if name in phases and s.recipe.model.gradient_checkpointing:
            part = f"CPU: {name} layer inputs"
            host_parts[part] = phase.micro_batch(s) * s.seq * s.arch.hidden * 2 * s.adapted / GIB
            phases[name].append(part)
    return host_parts


def _notes(s: Sizing, kv_sequences: int | None, kv_through_training: bool) -> list[str]:
    m, g, arch, offloaded = s.recipe.model, s.recipe.grpo, s.arch, s.offloaded
    tuned = "full fine-tuning:" if m.lora is None else f"LoRA r={m.lora.r}:"
    notes = [
        f"{m.name_or_path}: {arch.params / 1e9:.2f}B parameters, {'4-bit NF4' if m.load_in_4bit else s.weight_dtype} "
        f"linear layers; {tuned} {s.trainable / 1e6:.1f}M trainable parameters ({m.optimizer})."
    ]
    if s.processes > 1:
        notes.append(
            f"Per GPU of {s.processes} trainer processes (accelerate launch, DDP: each holds the whole model and its "
            f"optimizer): the SFT batches and each GRPO step's {g.batch_size * g.group_size} sequences are split "
            f"among them."
        )
    if m.server:
        notes.append(
            "model.server: every stage samples on the vLLM server's own GPUs (`rwml-lite plan --server-gpu-gb N` "
            "sizes its KV cache); these GPUs hold no generation KV cache."
        )
    if offloaded:
        notes.append(
            f"Offloading: {offloaded} of {arch.layers} decoder layers ({s.swapped / GIB:.2f} GiB each) live in "
            f"pinned CPU RAM; 'weights' counts the {arch.layers - offloaded} kept on the GPU, the embeddings, "
            f"{s.slots} swap slots" + (" and the offloaded layers' quantization scales." if m.load_in_4bit else ".")
        )
    if s.vllm:
        notes.append(
            f"vLLM (gpu_memory_utilization {m.gpu_memory_utilization}) shares the weights; its KV cache holds "
            f"{kv_sequences} sequences of {s.seq} tokens at once (model.generation_batch_size asks {m.generation_batch_size}); "
            + (
                "the engine sleeps (KV cache freed, weights kept) while our trainers run."
                if not kv_through_training
                else "UNSLOTH_VLLM_STANDBY=0: the engine cannot sleep, its KV cache stays through training."
            )
        )
    return notes


def server_kv_sequences(recipe: Recipe, gpu_gib: float, utilization: float = 0.9) -> int:
    """Sequences of model.max_seq_length that the KV cache of a vLLM server (`model.server`) holds on a GPU
    of `gpu_gib` at its default gpu_memory_utilization: what is left after the served bf16 weights, its
    runtime, and a LoRA slot of the recipe's rank."""
    arch, m = architecture(recipe.model.name_or_path), recipe.model
    lora = arch.lora_params(m.lora.r, m.lora.target_modules) * 2 if m.lora else 0
    budget = utilization * gpu_gib * GIB - arch.params * 2 - VLLM_RUNTIME_GIB * GIB - lora
    return max(int(budget // (arch.kv_bytes_per_token * m.max_seq_length)), 0)
