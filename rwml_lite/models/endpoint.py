"""A `Generator` over an OpenAI-compatible chat endpoint (vLLM's server, llama.cpp's, OpenAI's): what
plays the customer in tau2 conversations when the recipe lists it in `env.user_endpoints`, and what
the policy samples from when the recipe names a vLLM server (`model.server`). (The NL judge,
`env.judge_endpoint`, is called by upstream's evaluator through litellm.)

The prompts of one call go out together, one request each, so that the server batches them as a
local generate call would; each request carries a seed from torch's generator (the stage seeds it)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch

from rwml_lite.config import ServerSettings
from rwml_lite.errors import RwmlError
from rwml_lite.models import Completion, Sampling
from rwml_lite.prompts import Messages, template_args

#: requests in flight at once; the server queues the rest
MAX_CONCURRENT = 64
USER_FIX = "or remove it from env.user_endpoints (an empty list lets the recipe's own model play the user)"
SERVER_FIX = "or change model.server.url (null samples in this process)"


class EndpointGenerator:
    def __init__(self, base_url: str, model: str, timeout: float = 120.0, fix: str = USER_FIX):
        """`fix`: what the error of a failing server tells the user to change (the recipe field that named it)."""
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout, self.fix = model, timeout, fix
        self.name = f"{model} at {base_url}"  # what episode records say played the user
        key = os.environ.get("OPENAI_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def generate(self, prompts: list[Messages], n: int, sampling: Sampling) -> list[list[str]]:
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        with ThreadPoolExecutor(max_workers=max(1, min(MAX_CONCURRENT, len(prompts)))) as pool:
            return list(pool.map(lambda args: self._complete(*args, n, sampling), zip(prompts, seeds)))

    def _complete(self, prompt: Messages, seed: int, n: int, sampling: Sampling) -> list[str]:
        messages, options = template_args(prompt)
        body = {"model": self.model, "messages": messages, "n": n, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens, "seed": seed}  # fmt: skip
        if options.get("tools"):  # the server renders them with the model's template and parses the calls
            body["tools"] = options["tools"]
        if "enable_thinking" in options:  # vLLM passes these to the chat template
            body["chat_template_kwargs"] = {"enable_thinking": options["enable_thinking"]}
        if sampling.prefill:  # the reply starts with it: vLLM continues a final assistant message
            body["messages"] = [*messages, {"role": "assistant", "content": sampling.prefill}]
            body.update(add_generation_prompt=False, continue_final_message=True)
        try:
            response = httpx.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
            response.raise_for_status()
            choices = response.json()["choices"]
        except (httpx.HTTPError, KeyError, ValueError) as e:
            raise RwmlError(
                f"The endpoint {self.url} (model {self.model!r}) failed: {e}. Check that the server runs and serves "
                f"that model, {self.fix}."
            ) from None
        return [
            Completion.of(sampling.prefill + _as_text(c["message"]), truncated=c.get("finish_reason") == "length")
            for c in choices
        ]


def _as_text(message: dict) -> str:
    """A chat reply as the text a local model would have written: its content, then its tool calls in
    Qwen3's native form (what the tau2 environment reads)."""
    calls = [
        f'<tool_call>\n{{"name": {json.dumps(c["function"]["name"])}, "arguments": {c["function"]["arguments"]}}}\n</tool_call>'
        for c in message.get("tool_calls") or []
    ]
    return "\n".join([message.get("content") or "", *calls]).strip() if calls else message.get("content") or ""


def served_generator(server: ServerSettings, name_or_path: str, adapter: Path | None = None) -> EndpointGenerator:
    """Sampling from the recipe's vLLM server: the served base model, or a saved LoRA adapter that the
    server loads by path (vLLM's /v1/load_lora_adapter; the server runs with --enable-lora and
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, on a machine that sees the run folder)."""
    api = server.url.rstrip("/") + "/v1"
    model = server.model or name_or_path
    if adapter is not None:
        adapter = Path(adapter).resolve()
        model = (
            f"rwml-lite:{adapter}:{(adapter / 'adapter_model.safetensors').stat().st_mtime_ns}"  # new file, new name
        )
        try:
            response = httpx.post(f"{api}/load_lora_adapter", json={"lora_name": model, "lora_path": str(adapter)},
                                  timeout=server.timeout)  # fmt: skip
        except httpx.HTTPError as e:
            raise RwmlError(f"The vLLM server {server.url} (model.server.url) could not be reached: {e}.") from None
        if response.status_code != 200 and "already been loaded" not in response.text:
            raise RwmlError(
                f"The vLLM server {server.url} (model.server.url) did not load the adapter {adapter}: "
                f"{response.status_code} {response.text[:300]}. Start it with --enable-lora, --max-lora-rank at least "
                "model.lora.r, and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, on a machine that sees the run folder."
            )
    return EndpointGenerator(api, model, server.timeout, SERVER_FIX)
