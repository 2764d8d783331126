"""GPU memory and step time of RWML's GRPO through our unsloth backend, against `plan`'s estimate.

A random Qwen3 (built here, no download) of a few hundred million parameters is loaded through
`rwml_lite.models.unsloth` with 4-bit NF4 weights and Unsloth's gradient checkpointing, then trains
a few GRPO steps on RWML prompts with the real reward code over a small random embedder. Sampling uses transformers'
generate: vLLM is not installed on the benchmark machine. For each configuration it prints the
GRPOConfig fields that Unsloth's patched TRL resolved (those whose defaults it replaces), the
measured peak (PyTorch's reserved memory plus what the CUDA context holds beside it), the plan's
peak for the same recipe, their error, and the mean step time.

    python bench/gpu_peak.py [--out results.json]      # needs a CUDA GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import rwml_lite.models.unsloth as unsloth_backend  # first: Unsloth patches transformers/TRL/PEFT on import

import torch  # noqa: E402

from rwml_lite.config import build_recipe  # noqa: E402
from rwml_lite.models.hf import render_prompt  # noqa: E402
from rwml_lite.plan import estimate  # noqa: E402
from rwml_lite.prompts import rwml_messages, wm_sft_target  # noqa: E402
from rwml_lite.schemas import TripletRecord  # noqa: E402
from rwml_lite.records import read_jsonl  # noqa: E402
from rwml_lite.reward import NextStateReward  # noqa: E402
from rwml_lite.runfolder import RunFolder  # noqa: E402
from rwml_lite.tiny import chatml_tokenizer, random_embedder, random_qwen3, save  # noqa: E402
from rwml_lite.train.common import TRAINER_CONFIG, UNSLOTH_DEFAULTED, UNSLOTH_GRPO_DEFAULTED  # noqa: E402

SHAPE = {"hidden": 1024, "layers": 16, "intermediate": 3072, "heads": 16, "kv_heads": 8, "head_dim": 64}
CONFIGS = [  # (micro batch, completion tokens, GRPO group, prompts per step)
    (8, 256, 8, 2),
    (16, 512, 8, 2),
]
ROLE = "You are an expert agent in the ALFRED embodied environment."
OBSERVATION = "You arrive at countertop 1. On the countertop 1, you see a apple 2, a knife 1, and a mug 3."


def triplets(count: int) -> list[TripletRecord]:
    history, goal = [(OBSERVATION, "go to countertop 1")] * 5, "put a clean mug in coffeemachine."
    return [
        TripletRecord(triplet_id=f"bench/{i}", episode_id="bench", goal=goal, history=history, observation=OBSERVATION,
                      action=f"take mug {i} from countertop 1", next_observation=f"You pick up the mug {i} from the countertop 1.",
                      prompt=rwml_messages(ROLE, goal, history, OBSERVATION, f"take mug {i} from countertop 1", 5),
                      target=wm_sft_target(f"You pick up the mug {i} from the countertop 1."))
        for i in range(count)
    ]  # fmt: skip


def run(
    model_dir: Path, embedder_dir: Path, work: Path, micro: int, completion: int, group: int, prompts: int, steps: int
) -> dict:
    return measure_grpo(bench_recipe(model_dir, embedder_dir, work, micro, completion, group, prompts, steps), work)


def bench_recipe(
    model_dir: Path,
    embedder_dir: Path,
    work: Path,
    micro: int,
    completion: int,
    group: int,
    prompts: int,
    steps: int,
    model_fields: dict | None = None,
):
    """The recipe of one configuration; `model_fields` change its model section (bench/offload.py)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt_tokens = max(len(tokenizer(render_prompt(tokenizer, t.prompt))["input_ids"]) for t in triplets(prompts))
    data = {
        "run": {"dir": str(work), "report_to": "none"},
        "model": {"name_or_path": str(model_dir), "backend": "unsloth", "load_in_4bit": True, "fast_inference": False,
                  "dtype": "bfloat16", "max_seq_length": prompt_tokens + completion + 64, "generation_batch_size": prompts * group,
                  "gradient_checkpointing": True, "optimizer": "adamw_8bit", "lora": {"r": 16, "alpha": 32}},
        "reward": {"kind": "continuous", "embedder": str(embedder_dir)},
        "worldmodel": {"filter": {"enabled": False}},
        "grpo": {"group_size": group, "batch_size": prompts, "micro_batch_size": micro, "max_steps": steps,
                 "max_completion_length": completion, "save_steps": 1000, "learning_rate": 1e-5},
    }  # fmt: skip
    data["model"].update(model_fields or {})
    return build_recipe(data, [], "bench")


def measure_grpo(recipe, work: Path) -> dict:
    """Peak GPU memory and step times of the recipe's GRPO steps (grpo.max_steps), beside the plan's estimate."""
    from rwml_lite.train.grpo import train_rwml

    g = recipe.grpo
    micro, completion, group, prompts = g.micro_batch_size, g.max_completion_length, g.group_size, g.batch_size
    prompt_tokens = recipe.model.max_seq_length - completion - 64

    reward = NextStateReward.from_settings(recipe.reward)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    train_rwml(recipe, triplets(prompts * g.max_steps), reward, RunFolder(work))
    seconds = time.perf_counter() - started
    free, total = torch.cuda.mem_get_info()
    context = (total - free - torch.cuda.memory_reserved()) / 2**30  # held outside PyTorch's allocator
    measured = torch.cuda.max_memory_reserved() / 2**30 + context
    plan = estimate(recipe, total / 2**30)
    step_times = [m["step_time"] for m in read_jsonl(work / "metrics" / "rwml.jsonl") if "step_time" in m]
    trained = json.loads((work / "checkpoints" / "rwml" / TRAINER_CONFIG).read_text())
    return {
        "trainer_config": {
            k: trained[k] for k in [*UNSLOTH_DEFAULTED, *UNSLOTH_GRPO_DEFAULTED]
        },  # Unsloth's GRPOConfig, resolved
        "config": {
            "micro_batch": micro,
            "completion_tokens": completion,
            "group": group,
            "prompts": prompts,
            "prompt_tokens": prompt_tokens,
        },
        "measured_peak_gib": round(measured, 3),
        "max_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "context_gib": round(context, 3),
        "plan_peak_gib": round(plan.peak_gib, 3),
        "plan_phase": plan.peak_phase,
        "plan_parts": {k: round(v, 3) for k, v in plan.parts.items()},
        "error_pct": round(100 * (plan.peak_gib / measured - 1), 1),
        "step_seconds": step_times,
        "total_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/gpu_peak.py measures GPU memory: run it on a machine with a CUDA GPU.")

    with tempfile.TemporaryDirectory() as tmp:
        texts = [m["content"] for t in triplets(4) for m in t.prompt] + [t.next_observation for t in triplets(4)]
        tokenizer = chatml_tokenizer(texts * 20, vocab_size=args.vocab)
        model_dir = save(random_qwen3(tokenizer, **SHAPE), tokenizer, Path(tmp) / "model")
        embedder_dir = random_embedder(tokenizer, Path(tmp) / "embedder")
        results = {"device": torch.cuda.get_device_name(), "shape": SHAPE, "vocab": len(tokenizer), "runs": []}
        for i, config in enumerate(CONFIGS):
            result = run(model_dir, embedder_dir, Path(tmp) / f"run{i}", *config, steps=args.steps)
            results["runs"].append(result)
            print(json.dumps(result), flush=True)
            unsloth_backend._LOADED.clear()  # the next configuration loads afresh
            gc.collect()
    print(f"{'micro x completion':>20} {'measured GiB':>13} {'plan GiB':>9} {'error':>7} {'s/step':>7}")
    for r in results["runs"]:
        c = r["config"]
        step = sum(r["step_seconds"][1:]) / max(len(r["step_seconds"]) - 1, 1)  # the first step compiles
        print(
            f"{c['micro_batch']:>9} x {c['completion_tokens']:<8} {r['measured_peak_gib']:>13.2f} {r['plan_peak_gib']:>9.2f} {r['error_pct']:>+6.0f}% {step:>7.2f}"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
