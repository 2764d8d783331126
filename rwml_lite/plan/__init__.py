"""`rwml-lite plan`: what a recipe needs on one GPU (and in CPU RAM), part by part, whether it fits, what to change
when it does not, and how long its stages take where bandwidth and compute set the pace.

The package, by what each module holds (plan imports config, errors, distributed and, when called, sources,
runfolder and records; never the model backends):
  shapes.py      model shapes (`Architecture`, `KNOWN`, `architecture`) and bytes per dtype (`BYTES`, `GIB`)
  memory.py      the memory estimate: one function per part, the phases as a table (`PHASES`), `estimate`
  result.py      `Plan`, the estimate's result, and its table
  remedies.py    the recipe changes that shrink each part, the refusal, the CPU RAM warning
  anchors.py     published and measured peaks the estimate is checked against
  volumes.py     turns, eval tasks and the training data's volume (upper bound and expected)
  throughput.py  tokens/s bounds, training FLOPs, PCIe copies and hours per stage; the time tables

Public API (what the rest of rwml_lite, tests/ and bench/ import from `rwml_lite.plan`): the names in `__all__`
below; the time plan's other names are imported from `rwml_lite.plan.throughput` and `rwml_lite.plan.volumes`.
"""

from rwml_lite.plan.anchors import ANCHORS, Anchor, anchor_errors
from rwml_lite.plan.memory import estimate, server_kv_sequences
from rwml_lite.plan.remedies import host_ram_warning, refusal
from rwml_lite.plan.result import Plan, table
from rwml_lite.plan.shapes import BYTES, GIB, KNOWN, Architecture, architecture
from rwml_lite.plan.throughput import (
    GPU_GBS,
    PCIE_GBS,
    TRAIN_TFLOPS,
    bandwidth,
    estimates,
    time_tables,
    total_hours,
    work,
)
from rwml_lite.plan.volumes import eval_tasks, turns, volumes

__all__ = [
    "ANCHORS",
    "BYTES",
    "GIB",
    "GPU_GBS",
    "KNOWN",
    "PCIE_GBS",
    "TRAIN_TFLOPS",
    "Anchor",
    "Architecture",
    "Plan",
    "anchor_errors",
    "architecture",
    "bandwidth",
    "estimate",
    "estimates",
    "eval_tasks",
    "host_ram_warning",
    "refusal",
    "server_kv_sequences",
    "table",
    "time_tables",
    "total_hours",
    "turns",
    "volumes",
    "work",
]
