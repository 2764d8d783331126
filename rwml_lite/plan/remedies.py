"""What to change when a recipe does not fit: the recipe changes that shrink each part of the plan, the refusal
that names those still open, and the warning when CPU RAM looks short."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rwml_lite.config import Recipe

if TYPE_CHECKING:
    from rwml_lite.plan.result import Plan


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
