"""The in-process vLLM engine that Unsloth builds on the trainer's weights: when it sleeps, which
adapter request it gets, and how its samples are seeded.

Kept apart from `models/unsloth.py` (which imports Unsloth) so that the tests run these rules
against a real `vllm.LLM` (vLLM's CPU build, tests/test_vllm.py) and, for sleep and wake, which
that build refuses, a stand-in engine.

- Sleep: vLLM reserves `gpu_memory_utilization` of the GPU for weights + KV cache. Only TRL's GRPO
  code puts a colocated engine to sleep, so without us the KV cache would stay reserved through the
  filter's SFT. We put it to sleep before every trainer of ours and wake it before sampling. Under
  Unsloth's standby (`UNSLOTH_VLLM_STANDBY=1`) sleeping keeps the shared weights on the GPU and
  frees only the KV cache; level 1 avoids the buffer copies of level 2, which frees nothing more.
- Adapter requests: `model.load_lora(path)` reads the adapter from disk and takes a new id each
  call, and vLLM keys its LoRA and prefix caches by that request; one request per saved adapter
  (path + modification time) lets repeated calls (every agent turn of eval) reuse both.
- Seeds: requests carry none. Unsloth runs vLLM's engine core in the trainer's process
  (VLLM_ENABLE_V1_MULTIPROCESSING=0), where its sampler draws from torch's default generator for
  every request without a seed of its own; the pipeline seeds that generator before each stage, so
  a stage replays its samples as the hf backend does. A per-request seed would put the whole batch
  on vLLM's one-row-at-a-time sampling path on a GPU, and crashes vLLM's CPU build when the request
  is prefilled in chunks (bench/vllm_seeds.py measures the cost).

- The policy stage samples the LoRA *while it trains*: a saved adapter's request would be stale
  after the next optimizer step, and `fast_generate` without a request samples the base model, so
  the first sampling call after each optimizer step builds a request from the live LoRA tensors
  (`model.load_lora(live_lora_path(), load_tensors=True)`, no weights read from disk; Unsloth writes
  only the adapter's config there), and the step's other calls reuse it.
"""

from __future__ import annotations

from pathlib import Path

from rwml_lite.sources import cache_dir

SLEEP_LEVEL = 1


def _sleep_mode(engine) -> bool:
    """Whether the engine was built able to sleep (Unsloth enables it with standby)."""
    return bool(engine.llm_engine.vllm_config.model_config.enable_sleep_mode)


def sleep(model) -> None:
    """Free the engine's KV cache before a trainer runs (a no-op without an engine or sleep mode)."""
    engine = getattr(model, "vllm_engine", None)
    if engine is not None and _sleep_mode(engine) and not engine.llm_engine.is_sleeping():
        engine.sleep(level=SLEEP_LEVEL)


def wake(model) -> None:
    """Re-create the KV cache before sampling. Unsloth's patched `LLM.generate` wakes the engine
    too, but its `LLM.chat` does not, so we do not rely on the patch. Untagged on purpose: waking
    only `kv_cache` and later everything maps the KV cache twice."""
    engine = getattr(model, "vllm_engine", None)
    if engine is not None and engine.llm_engine.is_sleeping():
        engine.wake_up()


def live_lora_path() -> str:
    """Where the request for the policy stage's live LoRA is named: an absolute path in our cache,
    since Unsloth writes the adapter's config to it (a bare name would land in the working folder)."""
    return str(cache_dir() / "live_lora")


class AdapterRequests:
    """One LoRA request per saved adapter: a new one only when the adapter on disk changed."""

    def __init__(self, load_lora):
        self.load_lora = load_lora
        self.requests: dict[str, tuple[int, object]] = {}  # adapter folder -> (mtime of its weights, request)

    def get(self, adapter: Path | None):
        if adapter is None:
            return None
        folder = str(Path(adapter).resolve())
        saved = (Path(folder) / "adapter_model.safetensors").stat().st_mtime_ns
        if folder not in self.requests or self.requests[folder][0] != saved:
            self.requests[folder] = (saved, self.load_lora(folder))
        return self.requests[folder][1]
