"""The memory plan's result: each part's GiB, the phases that hold them, what lives in CPU RAM, whether the recipe
fits; and its table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


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
