"""Run by tests/test_vllm.py with vLLM's CPU build: the unsloth backend's sampling on a real `vllm.LLM`.

Unsloth builds the engine with LoRA enabled, runs its core in this process and hangs it on the model as
`vllm_engine`, with `fast_generate` (the engine's `generate`) and `load_lora(path)` (a new `LoRARequest`);
that wiring is the stand-in here, the engine and everything of ours are real. Prints one JSON line."""

import itertools
import json
import os
import sys
import types

os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # as Unsloth runs it: the engine core in this process
no_op = types.SimpleNamespace(for_inference=lambda model: None, for_training=lambda model: None)
sys.modules["unsloth"] = types.SimpleNamespace(FastLanguageModel=no_op)  # Unsloth's kernels: not on a CPU

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from vllm import LLM  # noqa: E402
from vllm.lora.request import LoRARequest  # noqa: E402

from rwml_lite.config import ModelSettings  # noqa: E402
from rwml_lite.models import Sampling, vllm_engine  # noqa: E402
from rwml_lite.models.hf import render_prompt  # noqa: E402
from rwml_lite.models.unsloth import UnslothGenerator  # noqa: E402

folder, adapter, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
settings = ModelSettings(name_or_path=folder, backend="unsloth", dtype="float32", max_seq_length=1024)
engine = LLM(model=folder, dtype="float32", enforce_eager=True, enable_lora=True, max_lora_rank=16, max_loras=1,
             max_model_len=1024, max_num_batched_tokens=budget, seed=0)  # fmt: skip
ids = itertools.count(1)
loads = []


def load_lora(path, load_tensors=False):
    loads.append(path)
    number = next(ids)
    return LoRARequest(f"lora {number}", number, path)


asked = []  # every SamplingParams the generator passes to the engine


def fast_generate(*args, sampling_params, **kwargs):
    asked.append(sampling_params)
    return engine.generate(*args, sampling_params=sampling_params, **kwargs)


model = types.SimpleNamespace(vllm_engine=engine, fast_generate=fast_generate, load_lora=load_lora)
tokenizer = AutoTokenizer.from_pretrained(folder)
requests = vllm_engine.AdapterRequests(model.load_lora)
vllm_engine.sleep(model)  # the guards, on the real engine's config and state
vllm_engine.wake(model)


def sample(adapter, prompts, n=2, **sampling):
    replies = UnslothGenerator(model, tokenizer, settings, adapter, requests).generate(prompts, n, Sampling(**sampling))
    return [[str(r) for r in group] for group in replies], replies


prompts = [[{"role": "user", "content": "You are in the kitchen. What do you do?"}],
           [{"role": "user", "content": "Name a fruit."}]]  # fmt: skip
sample(None, prompts)  # the first call compiles the sampler
torch.manual_seed(3)
first, sampled = sample(None, prompts)
unseeded, _ = sample(None, prompts)
torch.manual_seed(3)
again, _ = sample(None, prompts)
greedy = dict(temperature=0.0, max_new_tokens=12)
base, _ = sample(None, prompts, 1, **greedy)
tuned, _ = sample(adapter, prompts, 1, **greedy)
tuned_again, _ = sample(adapter, prompts, 1, **greedy)
_, cut = sample(adapter, prompts, max_new_tokens=2)
prefill = "<think> </think><next_state>"
prefilled, _ = sample(None, prompts, prefill=prefill, max_new_tokens=4)
long_prompt = [[{"role": "user", "content": "You see a table. " * 80 + "What do you do?"}]]
sample(None, long_prompt, max_new_tokens=4)
print(json.dumps({
    "sleep_mode": vllm_engine._sleep_mode(engine), "asleep": engine.llm_engine.is_sleeping(),
    "shape": [[len(first), len(first[0])], [len(tuned), len(sample(adapter, prompts)[0][0])]],
    "replayed": first == again, "same_without_reseeding": first == unseeded,
    "adapter_changes_replies": tuned == tuned_again and tuned != base, "loads": len(loads),
    "all_cut": all(r.truncated for group in cut for r in group),
    "prefilled": all(r.startswith(prefill) for group in prefilled for r in group),
    "neutral": all(p.top_k == 0 and p.min_p == 0 and p.repetition_penalty == 1 for p in asked),
    "ids_decode_to_text": all(r.token_ids and tokenizer.decode(r.token_ids, skip_special_tokens=True) == r
                              for group in sampled for r in group),
    "long_prompt_tokens": len(tokenizer(render_prompt(tokenizer, long_prompt[0]), add_special_tokens=False)["input_ids"]),
}))  # fmt: skip
