"""The offloaded MoE path on a GPU: sampling speed, peak memory and GRPO steps with layers in CPU RAM, against `plan`.

A random Qwen3-MoE (built here, no download; 32 experts, 4 per token, so Unsloth's routed 4-bit
kernel takes 8 sequences per decode step) is loaded through `rwml_lite.models.unsloth` in 4-bit
without vLLM, once with every layer on the GPU and once with `--offload` layers in pinned CPU RAM.
For each it measures the pinned host-to-GPU copy rate, the tokens/s of one generate call of 8
sequences, a few GRPO steps (bench/gpu_peak.py's harness), the peak GPU memory and the process's
peak RSS, and prints them beside `plan`'s estimates (memory, PCIe bytes per token, the tokens/s
bound at the measured copy rate), then the ratios offloaded / resident.

    python bench/offload.py [--offload 6] [--out results.json]      # needs a CUDA GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from gpu_peak import bench_recipe, measure_grpo, triplets  # imports Unsloth before transformers, TRL and PEFT

import rwml_lite.models.unsloth as unsloth_backend
from rwml_lite.models import Sampling
from rwml_lite.plan import estimate
from rwml_lite.plan.throughput import bandwidth
from rwml_lite.tiny import chatml_tokenizer, random_embedder, random_qwen3_moe, save

SHAPE = {"hidden": 1024, "layers": 12, "heads": 16, "kv_heads": 4, "head_dim": 64, "experts": 32, "active": 4,
         "expert_intermediate": 512}  # fmt: skip
SEQUENCES = SHAPE["experts"] // SHAPE["active"]  # the routed kernel's limit per decode step
NEW_TOKENS = 128
H100_MEMORY_GBS = 3350.0  # the plan's GPU memory rate for the bound (the H100 SXM's)


def copy_rate_gbs(gib: int = 1, repeats: int = 5) -> float:
    """Pinned host-to-GPU copy rate in GB/s: what the swap's prefetch runs at."""
    host = torch.empty(gib << 30, dtype=torch.uint8, pin_memory=True)
    device = torch.empty_like(host, device="cuda")
    device.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        device.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    return repeats * host.numel() / (time.perf_counter() - started) / 1e9


def sampling(recipe) -> dict:
    """Tokens/s of one generate call of SEQUENCES prompts x NEW_TOKENS (after a warm-up call)."""
    generator = unsloth_backend.generator(recipe.model)
    prompts = [t.prompt for t in triplets(SEQUENCES)]
    generator.generate(prompts[:1], 1, Sampling(max_new_tokens=8))  # compiles, allocates
    torch.cuda.synchronize()
    started = time.perf_counter()
    replies = generator.generate(prompts, 1, Sampling(max_new_tokens=NEW_TOKENS))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(len(generator.tokenizer(r[0], add_special_tokens=False)["input_ids"]) for r in replies)
    swap = getattr(generator.model, "_unsloth_block_swap", None)
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "swap_installed": swap is not None}  # fmt: skip


def measure(model_dir: Path, embedder_dir: Path, work: Path, offload: int, steps: int, pcie_gbs: float) -> dict:
    recipe = bench_recipe(
        model_dir, embedder_dir, work, micro=8, completion=NEW_TOKENS, group=SEQUENCES, prompts=1, steps=steps,
        model_fields={"offload_layers": offload, "generation_batch_size": SEQUENCES},
    )  # fmt: skip
    torch.cuda.reset_peak_memory_stats()
    sampled = sampling(recipe)
    grpo = measure_grpo(recipe, work)
    plan = estimate(recipe, torch.cuda.get_device_properties(0).total_memory / 2**30)
    b = bandwidth(recipe, plan, pcie_gbs=pcie_gbs, gpu_gbs=H100_MEMORY_GBS)
    return {
        "offload_layers": offload,
        "sampling": sampled,
        "plan_tokens_per_s_bound": round(b.tokens_per_second(SEQUENCES), 1),
        "plan_pcie_mib_per_token": round(b.pcie_bytes_per_token(SEQUENCES) / 2**20, 3),
        "measured_peak_gib": grpo["measured_peak_gib"],
        "plan_peak_gib": grpo["plan_peak_gib"],
        "plan_cpu_ram_gib": round(max(plan.host_gib(p) for p in plan.phases), 2),
        "max_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),  # the process so far
        "grpo_step_seconds": grpo["step_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--offload", type=int, default=6, help="layers in CPU RAM in the offloaded run")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps per run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/offload.py measures the offloaded path on a GPU: run it on a machine with a CUDA GPU.")

    results = {"device": torch.cuda.get_device_name(), "shape": SHAPE, "pcie_gbs": round(copy_rate_gbs(), 2)}
    with tempfile.TemporaryDirectory() as tmp:
        texts = [m["content"] for t in triplets(4) for m in t.prompt] + [t.next_observation for t in triplets(4)]
        tokenizer = chatml_tokenizer(texts * 20, vocab_size=32000)
        model_dir = save(random_qwen3_moe(tokenizer, **SHAPE), tokenizer, Path(tmp) / "model")
        embedder_dir = random_embedder(tokenizer, Path(tmp) / "embedder")
        results["runs"] = []
        for i, offload in enumerate((0, args.offload)):
            run = measure(model_dir, embedder_dir, Path(tmp) / f"run{i}", offload, args.steps, results["pcie_gbs"])
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
            unsloth_backend._LOADED.clear()  # the next run loads afresh
            gc.collect()
            torch.cuda.empty_cache()
    resident, offloaded = results["runs"]
    print(f"pinned copy rate {results['pcie_gbs']} GB/s on {results['device']}")
    print(f"{'offload':>8} {'tokens/s':>9} {'plan <=':>8} {'peak GiB':>9} {'plan GiB':>9} {'RSS GiB':>8}")
    for r in results["runs"]:
        print(
            f"{r['offload_layers']:>8} {r['sampling']['tokens_per_s']:>9} {r['plan_tokens_per_s_bound']:>8} "
            f"{r['measured_peak_gib']:>9} {r['plan_peak_gib']:>9} {r['max_rss_gib']:>8}"
        )
    print(
        f"offloaded / resident: tokens/s x{offloaded['sampling']['tokens_per_s'] / resident['sampling']['tokens_per_s']:.2f}"
        f" (plan's bound x{offloaded['plan_tokens_per_s_bound'] / resident['plan_tokens_per_s_bound']:.2f}), "
        f"peak GPU memory {offloaded['measured_peak_gib'] - resident['measured_peak_gib']:+.2f} GiB "
        f"(plan {offloaded['plan_peak_gib'] - resident['plan_peak_gib']:+.2f})"
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
