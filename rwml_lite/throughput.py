"""Time plan: how fast a recipe generates and how long its stages take where bandwidth sets the pace.

A decode step of a batch of S sequences makes one token of each, and two copies bound it:
- PCIe: every offloaded layer (`model.offload_layers`) crosses from pinned CPU RAM to the GPU once
  per forward pass, whatever S is: `offloaded bytes` per step, `offloaded bytes / S` per token;
- GPU memory: the step reads the resident weights it uses (an MoE only the experts its S x k routed
  tokens pick, E x (1 - (1 - k/E)^S) of E when routing is uniform; embeddings are looked up, only the
  output head is read) and the KV cache of the S sequences (half of max_seq_length each, on average).
Unsloth prefetches the next layers while one computes, so a step lasts the longer of the two and
tokens/s <= S / max(PCIe time, memory time). Sampling, Python and bitsandbytes' dequantization keep
real generation below that bound (not yet measured on a GPU for this path). The token budgets are
the recipe's upper bounds: every reply fills its budget, every episode runs to its step limit, every
transition becomes a triplet (within ~2x for a thinking model that fails often). Their quotient is
an estimate, neither floor nor ceiling, that tells a day from a month. A training micro batch
copies the offloaded layers in forward and again in backward (`copies_per_micro_batch`); training's
compute time is not estimated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rwml_lite.config import Recipe
from rwml_lite.plan import BYTES, GIB, Architecture, Plan, architecture

#: Default PCIe rate: what pinned host-to-device copies reach on PCIe 4.0 x16 (RTX 3090/4090, A6000,
#: L40S); PCIe 3.0 x16 gives about 12, PCIe 5.0 x16 about 50.
PCIE_GBS = 25.0
#: Default GPU memory bandwidth: an RTX 3090's (RTX 4090: 1008, A6000: 768, L40S: 864, A100 80GB:
#: 2039, H100 SXM: 3350).
GPU_GBS = 936.0


@dataclass(frozen=True)
class Generation:
    """One kind of sampling a stage does: how many sequences decode at once and how many tokens in all."""

    stage: str
    sequences: int
    tokens: int


@dataclass(frozen=True)
class Training:
    """A training stage: optimizer steps and micro batches (forward + backward) per step."""

    stage: str
    steps: int
    micro_batches: int


@dataclass(frozen=True)
class Bandwidth:
    """The arithmetic of one recipe's plan at given PCIe and GPU memory rates (GB/s, 1e9 bytes)."""

    arch: Architecture
    plan: Plan
    recipe: Recipe
    pcie_gbs: float = PCIE_GBS
    gpu_gbs: float = GPU_GBS

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


def work(recipe: Recipe, plan: Plan) -> tuple[list[Generation], list[Training]]:
    """The sampling and training of the recipe's stages, at their budgets (see the module's docstring).
    transformers' generate decodes model.generation_batch_size sequences at once (TRL's GRPO a whole
    step, batch x group); vLLM takes every prompt of a call and decodes as many as its KV cache holds."""
    m, a, c, f, g, w, p, e = (
        recipe.model, recipe.agent, recipe.collect, recipe.worldmodel.filter, recipe.grpo, recipe.wm_sft,
        recipe.policy, recipe.eval,
    )  # fmt: skip
    stages = recipe.stages

    def turns(limit: int) -> int:
        """Agent turns of an episode at its step limit: tau2 counts every message, and each of the
        agent's is answered by the user or a tool, so at most every other one is the agent's."""
        return (limit + 1) // 2 if recipe.env.name == "tau2" else limit

    episodes = c.num_tasks * c.rollouts_per_task
    triplets = episodes * turns(c.max_steps)  # every transition of every episode (the build keeps at most these)
    # vLLM's KV cache holds kv_sequences at full length; pages come as tokens do, so about twice as many
    # at the average half length decode together
    at_once = m.generation_batch_size if plan.kv_sequences is None else max(2 * plan.kv_sequences, 1)
    agent_sequences = min(at_once, a.parallel_episodes)
    generation, training = [], []
    if "collect" in stages:
        generation.append(Generation("collect", agent_sequences, triplets * a.max_new_tokens))
    if "filter" in stages and f.enabled:
        filter_at_once = at_once if plan.kv_sequences is not None else max(1, at_once // f.samples) * f.samples
        generation.append(Generation("filter", filter_at_once, triplets * f.samples * f.max_new_tokens))
        training.append(Training("filter SFT", math.ceil(f.epochs * triplets / f.batch_size), 1))
    if "rwml" in stages:
        completions = g.batch_size * g.group_size
        steps = g.max_steps if g.max_steps > 0 else math.ceil(g.epochs * triplets / g.batch_size)
        sequences = completions if plan.kv_sequences is None else min(completions, at_once)
        generation.append(Generation("RWML GRPO", sequences, steps * completions * g.max_completion_length))
        training.append(Training("RWML GRPO", steps, math.ceil(completions / g.micro_batch_size)))
    if "wm_sft" in stages:
        training.append(Training("WM SFT", math.ceil(w.epochs * triplets / w.batch_size), 1))
    if "policy" in stages:
        step_turns = p.tasks_per_step * p.group_size * turns(p.episode_max_steps)
        sequences = min(at_once, p.tasks_per_step * p.group_size)
        generation.append(Generation("Policy RL", sequences, p.max_steps * step_turns * a.max_new_tokens))
        training.append(Training("Policy RL", p.max_steps, math.ceil(step_turns / p.micro_batch_size)))
    if "eval" in stages:
        tasks = [e.num_tasks or recipe.env.tasks(split) for split in e.splits]
        if all(tasks):
            per_policy = sum(tasks) * e.runs * turns(e.max_steps) * a.max_new_tokens
            generation.append(Generation("eval", agent_sequences, len(recipe.evaluated_policies()) * per_policy))
    return generation, training


def bandwidth(recipe: Recipe, plan: Plan, pcie_gbs: float = PCIE_GBS, gpu_gbs: float = GPU_GBS) -> Bandwidth:
    return Bandwidth(architecture(recipe.model.name_or_path), plan, recipe, pcie_gbs, gpu_gbs)


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


def estimates(b: Bandwidth) -> tuple[list[Sampled], list[Copied]]:
    """Every stage's sampling, and (offloading only) its training's copies."""
    generation, training = work(b.recipe, b.plan)
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
    return sampled, copied


def total_hours(b: Bandwidth) -> float:
    return sum(x.hours for rows in estimates(b) for x in rows)


def time_tables(b: Bandwidth) -> list:
    """Rich tables: the stages' sampling (with the total below), and with offloading the training copies."""
    from rich.table import Table

    sampled, copied = estimates(b)
    tables = [
        Table(
            "stage",
            "sequences / step",
            "PCIe MiB / token",
            "tokens/s <=",
            "bound",
            "tokens",
            "hours",
            title=f"Sampling at PCIe {b.pcie_gbs:g} GB/s (--pcie-gbs), GPU memory {b.gpu_gbs:g} GB/s (--gpu-gbs)",
        )  # fmt: skip
    ]
    for x in sampled:
        tables[0].add_row(
            x.stage, str(x.sequences), f"{b.pcie_bytes_per_token(x.sequences) / 2**20:.1f}",
            f"{x.tokens_per_second:,.0f}", x.bound, f"{x.tokens / 1e6:,.1f}M", f"{x.hours:,.1f}",
        )  # fmt: skip
    if copied:
        tables.append(Table("training stage", "steps", "PCIe GiB / step", "hours", title="Training's PCIe copies"))
        for x in copied:
            tables[1].add_row(x.stage, str(x.steps), f"{x.bytes_per_step / GIB:.1f}", f"{x.hours:,.1f}")
    total = sum(x.hours for x in [*sampled, *copied])
    tables[-1].caption = (
        f"{total:,.1f} hours ({total / 24:,.1f} days) where bandwidth sets the pace, at these token budgets; "
        "compute (training, Python, dequantization) adds to it"
    )
    return tables
