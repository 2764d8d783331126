"""Time plan: how fast a recipe generates and how long its stages take where bandwidth sets the pace.

A decode step of a batch of S sequences makes one token of each, and two copies bound it:
- PCIe: every offloaded layer (`model.offload_layers`) crosses from pinned CPU RAM to the GPU once
  per forward pass, whatever S is: `offloaded bytes` per step, `offloaded bytes / S` per token;
- GPU memory: the step reads the resident weights it uses (an MoE only the experts its S x k routed
  tokens pick, E x (1 - (1 - k/E)^S) of E when routing is uniform; embeddings are looked up, only the
  output head is read) and the KV cache of the S sequences (half of max_seq_length each, on average).
Unsloth prefetches the next layers while one computes, so a step lasts the longer of the two and
tokens/s <= S / max(PCIe time, memory time). Sampling, Python and bitsandbytes' dequantization keep
real generation below that bound (not yet measured on a GPU for this path). Replies fill their
budgets and episodes run to their step limits. The triplets, which set the filter's and the trainers'
work, come in two volumes: the upper bound (every transition a triplet, all kept) and the expected one
(this run's own counts once collect and the filter have run, else the paper's yield on the benchmark).
Training costs FLOPs at a training throughput (`--train-tflops`): each trained token's forward through
every layer and the output head, backward through the layers LoRA reaches, and their forward again
under gradient checkpointing, over sequences of `max_seq_length` tokens (upper) or half that
(expected). A training micro batch also copies the offloaded layers in forward and again in backward
(`copies_per_micro_batch`). The totals are estimates, neither floor nor ceiling, that tell a day from
a month; `rwml-lite selftest` measures the real rates on the machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rwml_lite.config import Recipe
from rwml_lite.plan.result import Plan
from rwml_lite.plan.shapes import BYTES, GIB, Architecture, architecture
from rwml_lite.plan.volumes import Volume, eval_tasks, turns, upper_volume, volumes

#: Default PCIe rate: what pinned host-to-device copies reach on PCIe 4.0 x16 (RTX 3090/4090, A6000,
#: L40S); PCIe 3.0 x16 gives about 12, PCIe 5.0 x16 about 50.
PCIE_GBS = 25.0
#: Default GPU memory bandwidth: an RTX 3090's (RTX 4090: 1008, A6000: 768, L40S: 864, A100 80GB:
#: 2039, H100 SXM: 3350).
GPU_GBS = 936.0
#: Unsloth's cap on the sequences its vLLM engine decodes at once, by the GiB left for the KV cache (unsloth_zoo
#: 2026.10.9, vllm_utils.load_vllm's max_num_seqs): (up to GiB, sequences); 256 above 80 GiB.
UNSLOTH_MAX_SEQS = ((2, 8), (4, 16), (8, 32), (12, 48), (16, 64), (24, 80), (40, 96), (48, 112), (80, 128))


def unsloth_max_seqs(kv_gib: float) -> int:
    return next((seqs for gib, seqs in UNSLOTH_MAX_SEQS if kv_gib <= gib), 256)


#: Default training throughput: the bf16 TFLOP/s a training step reaches, about 40 % of an RTX 3090's 71 dense peak
#: (peaks: RTX 4090 165, A6000 155, L40S 362, A100 312, H100 SXM 989).
TRAIN_TFLOPS = 28.0


@dataclass(frozen=True)
class Generation:
    """One kind of sampling a stage does: how many sequences decode at once and how many tokens in all."""

    stage: str
    sequences: int
    tokens: int


@dataclass(frozen=True)
class Training:
    """A training stage: optimizer steps, micro batches (forward + backward) per step, sequences trained per step,
    their tokens (prompt and reply), and forward passes without gradient per trained sequence (GRPO's log-probs
    for vLLM's importance-sampling correction, the reference model's under a KL term)."""

    stage: str
    steps: int
    micro_batches: int
    sequences: int
    context: int
    extra_forwards: int = 0


@dataclass(frozen=True)
class Bandwidth:
    """The arithmetic of one recipe's plan at given PCIe and GPU memory rates (GB/s, 1e9 bytes)."""

    arch: Architecture
    plan: Plan
    recipe: Recipe
    pcie_gbs: float = PCIE_GBS
    gpu_gbs: float = GPU_GBS
    train_tflops: float = TRAIN_TFLOPS

    @property
    def offloaded_bytes(self) -> float:
        """Bytes that cross PCIe per forward pass: every offloaded layer, once."""
        return self.plan.offloaded_layers * self.plan.swapped_bytes

    def pcie_bytes_per_token(self, sequences: int) -> float:
        return self.offloaded_bytes / sequences

    def dequantizes_whole_stacks(self, sequences: int) -> bool:
        """Whether a decode step of `sequences` runs Unsloth's 4-bit experts through the dequantized
        stack: its routed NF4 kernel takes at most one (token, expert) slot per expert per call."""
        m, a = self.recipe.model, self.arch
        unsloth_hf = m.backend == "unsloth" and not m.fast_inference
        return unsloth_hf and m.load_in_4bit and a.experts > 0 and sequences * a.active_experts > a.experts

    def memory_bytes_per_step(self, sequences: int) -> float:
        """Bytes a decode step moves in GPU memory: the resident layers' weights it uses (the experts its
        tokens route to, or for whole dequantized stacks the 4-bit stack read, its bf16 copy written and
        read), the output head, and the KV cache of `sequences` sequences half way through max_seq_length."""
        a, m = self.arch, self.recipe.model
        shapes = a.module_shapes()
        attention = sum(shapes[n][0] * shapes[n][1] for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
        expert = sum(shapes[n][0] * shapes[n][1] for n in ("gate_proj", "up_proj", "down_proj"))
        linear = self.plan.linear_bytes
        if self.dequantizes_whole_stacks(sequences):
            experts = a.experts * expert * (linear + 2 * BYTES["bfloat16"])
        else:
            used = a.experts * (1 - (1 - a.active_experts / a.experts) ** sequences) if a.experts else 1
            experts = used * expert * linear
        layer = (attention + a.hidden * a.experts) * linear + experts
        kv = sequences * (m.max_seq_length // 2) * a.kv_bytes_per_token
        return (a.layers - self.plan.offloaded_layers) * layer + a.vocab * a.hidden * BYTES["bfloat16"] + kv

    def step_seconds(self, sequences: int) -> tuple[float, float]:
        """(PCIe, GPU memory) seconds of one decode step: copies overlap compute, the longer one sets it."""
        return self.offloaded_bytes / (self.pcie_gbs * 1e9), self.memory_bytes_per_step(sequences) / (
            self.gpu_gbs * 1e9
        )

    def tokens_per_second(self, sequences: int) -> float:
        """The bandwidth bound on generation: `sequences` tokens per decode step."""
        return sequences / max(self.step_seconds(sequences))

    def pcie_bound(self, sequences: int) -> bool:
        pcie, memory = self.step_seconds(sequences)
        return pcie > memory

    def copies_per_micro_batch(self) -> int:
        """Offloaded layers copied by one training micro batch: each once in forward; in backward those
        with LoRA above them (backward stops at the lowest adapted layer) except the last two, which
        the swap keeps through the turn (unsloth_zoo's block_swap, placement "spread")."""
        n, layers = self.plan.offloaded_layers, self.arch.layers
        if not n:
            return 0
        swapped = [(k + 1) * layers // n - 1 for k in range(n)]  # Unsloth's spread placement
        lora = self.recipe.model.lora
        lowest_adapted = layers - min(layers, (lora.last_layers if lora else None) or layers)
        return n + max(sum(i >= lowest_adapted for i in swapped) - 2, 0)

    def training_pcie_bytes(self, micro_batches: int) -> float:
        """Bytes over PCIe per optimizer step of `micro_batches` micro batches."""
        return micro_batches * self.copies_per_micro_batch() * self.plan.swapped_bytes


def decoded_at_once(recipe: Recipe, plan: Plan) -> int:
    """Sequences one generate call decodes together: model.generation_batch_size with transformers' generate; with
    vLLM as many as its KV cache holds (within Unsloth's cap on its engine)."""
    m = recipe.model
    # vLLM's KV cache holds kv_sequences at full length; pages come as tokens do, so about twice as many
    # at the average half length decode together
    at_once = m.generation_batch_size if plan.kv_sequences is None else max(2 * plan.kv_sequences, 1)
    if m.backend == "unsloth" and m.fast_inference:
        at_once = min(at_once, unsloth_max_seqs(plan.parts.get("KV cache", 0.0)))
    return at_once


def work(recipe: Recipe, plan: Plan, volume: Volume | None = None) -> tuple[list[Generation], list[Training]]:
    """The sampling and training of the recipe's stages at `volume` (the upper bound by default; see the module's
    docstring). transformers' generate decodes model.generation_batch_size sequences at once (TRL's GRPO a whole
    step, batch x group); vLLM takes every prompt of a call and decodes as many as its KV cache holds."""
    m, a, c, f, g, w, p, e = (
        recipe.model, recipe.agent, recipe.collect, recipe.worldmodel.filter, recipe.grpo, recipe.wm_sft,
        recipe.policy, recipe.eval,
    )  # fmt: skip
    volume = volume or upper_volume(recipe)
    stages = recipe.stages
    episodes = c.num_tasks * c.rollouts_per_task
    triplets = episodes * volume.triplets_per_rollout
    val = triplets * recipe.worldmodel.val_fraction  # the filter model trains on these
    kept = (triplets - val) * volume.kept_share  # RWML and WM SFT train on these
    at_once = decoded_at_once(recipe, plan)
    agent_sequences = min(at_once, a.parallel_episodes)

    def context(reply: int) -> int:
        """Tokens of a trained sequence: a prompt and a reply of `reply` tokens, within max_seq_length."""
        return min(m.max_seq_length, volume.prompt_tokens + reply)

    generation, training = [], []
    if "collect" in stages:
        generation.append(
            Generation("collect", agent_sequences, episodes * turns(recipe, c.max_steps) * a.max_new_tokens)
        )
    if "filter" in stages and f.enabled:
        filter_at_once = at_once if plan.kv_sequences is not None else max(1, at_once // f.samples) * f.samples
        generation.append(Generation("filter", filter_at_once, round((triplets - val) * f.samples * f.max_new_tokens)))
        sft_steps = math.ceil(f.epochs * val / f.batch_size)
        micro_batches = f.batch_size // (f.micro_batch_size or f.batch_size)
        training.append(Training("filter SFT", sft_steps, micro_batches, f.batch_size, context(volume.target_tokens)))
    if "rwml" in stages:
        completions = g.batch_size * g.group_size
        steps = g.max_steps if g.max_steps > 0 else math.ceil(g.epochs * kept / g.batch_size)
        sequences = completions if plan.kv_sequences is None else min(completions, at_once)
        generation.append(Generation("RWML GRPO", sequences, steps * completions * g.max_completion_length))
        sampled_elsewhere = (m.backend == "unsloth" and m.fast_inference) or m.server is not None  # vLLM's log-probs
        forwards = int(sampled_elsewhere and g.importance_sampling_correction) + int(g.beta > 0)
        micro_batches = math.ceil(completions / g.micro_batch_size)
        training.append(
            Training("RWML GRPO", steps, micro_batches, completions, context(g.max_completion_length), forwards)
        )
    if "wm_sft" in stages:
        sft_steps = math.ceil(w.epochs * kept / w.batch_size)
        micro_batches = w.batch_size // (w.micro_batch_size or w.batch_size)
        training.append(Training("WM SFT", sft_steps, micro_batches, w.batch_size, context(volume.target_tokens)))
    if "policy" in stages:
        step_turns = p.tasks_per_step * p.group_size * turns(recipe, p.episode_max_steps)
        sequences = min(at_once, p.tasks_per_step * p.group_size)
        generation.append(Generation("Policy RL", sequences, p.max_steps * step_turns * a.max_new_tokens))
        micro_batches = math.ceil(step_turns / p.micro_batch_size)
        # log-probs before the first of several updates (policy.mini_batch_size), the reference's (beta > 0)
        forwards = int(p.mini_batch_size is not None and step_turns > p.mini_batch_size) + int(p.beta > 0)
        training.append(
            Training("Policy RL", p.max_steps, micro_batches, step_turns, context(a.max_new_tokens), forwards)
        )
    if "eval" in stages:
        tasks = eval_tasks(recipe)
        if all(tasks):
            per_policy = sum(tasks) * e.runs * turns(recipe, e.max_steps) * a.max_new_tokens
            generation.append(Generation("eval", agent_sequences, len(recipe.evaluated_policies()) * per_policy))
    return generation, training


def _forward_flops(arch: Architecture, context: int) -> tuple[float, float]:
    """FLOPs of one token's forward pass through (a decoder layer, the output head): 2 per weight it passes (its
    active experts only, the router) and causal attention over `context` tokens (QK and AV, half on average)."""
    shapes = arch.module_shapes()
    attention = sum(shapes[n][0] * shapes[n][1] for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    mlp = sum(shapes[n][0] * shapes[n][1] for n in ("gate_proj", "up_proj", "down_proj")) * max(arch.active_experts, 1)
    layer = 2 * (attention + mlp + arch.hidden * arch.experts) + 2 * 2 * arch.q_dim * context / 2
    return layer, 2 * arch.vocab * arch.hidden


def forward_flops_per_token(arch: Architecture, context: int) -> float:
    """FLOPs of a forward pass without gradient (log-probs), per token."""
    layer, head = _forward_flops(arch, context)
    return arch.layers * layer + head


def training_flops_per_token(arch: Architecture, recipe: Recipe, context: int) -> float:
    """FLOPs of one trained token: its forward pass; backward through the layers LoRA reaches (all for full
    fine-tuning) and the head, 1x their forward where the weights are frozen (the input's gradient alone), 2x
    where they train; under gradient checkpointing those layers' forward again."""
    m = recipe.model
    layer, head = _forward_flops(arch, context)
    reached = arch.layers if m.lora is None else min(arch.layers, m.lora.last_layers or arch.layers)
    backward = (2 if m.lora is None else 1) * (reached * layer + head)
    recomputed = reached * layer if m.gradient_checkpointing else 0
    return forward_flops_per_token(arch, context) + backward + recomputed


def step_flops(arch: Architecture, recipe: Recipe, job: Training) -> float:
    """FLOPs of one optimizer step: every trained sequence's tokens, trained and read again without gradient."""
    per_token = training_flops_per_token(arch, recipe, job.context) + job.extra_forwards * forward_flops_per_token(
        arch, job.context
    )
    return job.sequences * job.context * per_token


def bandwidth(
    recipe: Recipe, plan: Plan, pcie_gbs: float = PCIE_GBS, gpu_gbs: float = GPU_GBS, train_tflops: float = TRAIN_TFLOPS
) -> Bandwidth:
    return Bandwidth(architecture(recipe.model.name_or_path), plan, recipe, pcie_gbs, gpu_gbs, train_tflops)


@dataclass(frozen=True)
class Sampled:
    """A stage's sampling: sequences per decode step, the tokens/s bound and what sets it, tokens, hours."""

    stage: str
    sequences: int
    tokens_per_second: float
    bound: str
    tokens: int
    hours: float


@dataclass(frozen=True)
class Copied:
    """A training stage's PCIe copies of the offloaded layers: steps, bytes per step, hours."""

    stage: str
    steps: int
    bytes_per_step: float
    hours: float


@dataclass(frozen=True)
class Computed:
    """A training stage's compute: steps, FLOPs per step, hours at the training throughput."""

    stage: str
    steps: int
    context: int
    flops_per_step: float
    hours: float


def estimates(b: Bandwidth, volume: Volume | None = None) -> tuple[list[Sampled], list[Copied], list[Computed]]:
    """Every stage's sampling, its training's compute, and (offloading only) its training's copies, at `volume`
    (the upper bound by default)."""
    volume = volume or upper_volume(b.recipe)
    generation, training = work(b.recipe, b.plan, volume)
    sampled = [
        Sampled(
            job.stage,
            job.sequences,
            (rate := b.tokens_per_second(job.sequences)),
            "PCIe" if b.pcie_bound(job.sequences) else "GPU memory",
            job.tokens,
            job.tokens / rate / 3600,
        )  # fmt: skip
        for job in generation
    ]
    copied = [
        Copied(job.stage, job.steps, (step := b.training_pcie_bytes(job.micro_batches)), job.steps * step / (b.pcie_gbs * 1e9) / 3600)
        for job in training
        if b.offloaded_bytes
    ]  # fmt: skip
    computed = [
        Computed(job.stage, job.steps, job.context, (flops := step_flops(b.arch, b.recipe, job)),
                 job.steps * flops / (b.train_tflops * 1e12) / 3600)
        for job in training
    ]  # fmt: skip
    return sampled, copied, computed


def total_hours(b: Bandwidth, volume: Volume | None = None) -> float:
    return sum(x.hours for rows in estimates(b, volume) for x in rows)


def time_tables(b: Bandwidth) -> list:
    """Rich tables: the stages' sampling and their training (compute, and with offloading PCIe copies), each at the
    expected volume beside the upper bound, with the totals below."""
    from rich.table import Table

    at = volumes(b.recipe)
    expected, upper = estimates(b, at["expected"]), estimates(b, at["upper"])
    sampling = Table("stage", "sequences / step", "PCIe MiB / token", "tokens/s <=", "bound", "tokens", "hours",
                     "tokens (upper)", "hours (upper)",
                     title=f"Sampling at PCIe {b.pcie_gbs:g} GB/s (--pcie-gbs), GPU memory {b.gpu_gbs:g} GB/s (--gpu-gbs)")  # fmt: skip
    for x, y in zip(expected[0], upper[0], strict=True):
        sampling.add_row(
            x.stage, str(x.sequences), f"{b.pcie_bytes_per_token(x.sequences) / 2**20:.1f}", f"{x.tokens_per_second:,.0f}",
            x.bound, f"{x.tokens / 1e6:,.1f}M", f"{x.hours:,.1f}", f"{y.tokens / 1e6:,.1f}M", f"{y.hours:,.1f}",
        )  # fmt: skip
    training = Table("training stage", "steps", "tokens / sequence", "TFLOP / step", "hours", "steps (upper)",
                     "tokens (upper)", "TFLOP / step (upper)", "hours (upper)",
                     title=f"Training compute at {b.train_tflops:g} TFLOP/s (--train-tflops)")  # fmt: skip
    for x, y in zip(expected[2], upper[2], strict=True):
        training.add_row(x.stage, str(x.steps), str(x.context), f"{x.flops_per_step / 1e12:,.0f}", f"{x.hours:,.1f}",
                         str(y.steps), str(y.context), f"{y.flops_per_step / 1e12:,.0f}", f"{y.hours:,.1f}")  # fmt: skip
    tables = [sampling, training]
    if expected[1]:
        copies = Table(
            "training stage", "steps", "PCIe GiB / step", "hours", "hours (upper)", title="Training's PCIe copies"
        )
        for x, y in zip(expected[1], upper[1], strict=True):
            copies.add_row(x.stage, str(x.steps), f"{x.bytes_per_step / GIB:.1f}", f"{x.hours:,.1f}", f"{y.hours:,.1f}")
        tables.append(copies)
    low, high = (sum(x.hours for rows in e for x in rows) for e in (expected, upper))
    tables[-1].caption = (
        f"Expected {low:,.1f} hours ({low / 24:,.1f} days; triplets: {at['expected'].source}, "
        f"{at['expected'].triplets_per_rollout:.2f} per rollout, {100 * at['expected'].kept_share:.0f} % kept; "
        f"prompts of {at['expected'].prompt_tokens} tokens, targets of {at['expected'].target_tokens}); upper bound "
        f"{high:,.1f} hours ({high / 24:,.1f} days; {at['upper'].source}, every sequence max_seq_length). Python, "
        "dequantization and the environments add to it: `rwml-lite selftest` measures this machine."
    )
    return tables
