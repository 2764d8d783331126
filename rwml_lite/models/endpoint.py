"""Generators over OpenAI-compatible servers. `EndpointGenerator` (chat API: vLLM's server, llama.cpp's,
OpenAI's) plays the customer in tau2 conversations when the recipe lists it in `env.user_endpoints`;
`ServedGenerator` (vLLM's completions API, prompts rendered here) is what the policy samples from when
the recipe names a vLLM server (`model.server`). (The NL judge, `env.judge_endpoint`, is called by
upstream's evaluator through litellm.)

The prompts of one call go out together, one request each, so that the server batches them as a
local generate call would. Requests carry no seed: the server samples from its own generator (`vllm serve
--seed`). A seeded request would put vLLM's GPU sampler on its one-row-at-a-time path for the whole batch,
and crashes the CPU build when its prompt is prefilled in chunks (bench/vllm_seeds.py)."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from rwml_lite.config import ServerSettings
from rwml_lite.distributed import barrier, is_main
from rwml_lite.errors import RwmlError
from rwml_lite.models import NEUTRAL, Completion, Sampling, stop_ids
from rwml_lite.prompts import Messages, template_args

#: requests in flight at once; the server queues the rest
MAX_CONCURRENT = 64
#: The rendered prompt already holds its special tokens (a BOS added again would change it).
AS_RENDERED = {"add_special_tokens": False}


class EndpointGenerator:
    def __init__(self, base_url: str, model: str, timeout: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout = model, timeout
        self.name = f"{model} at {base_url}"  # what episode records say played the user
        self.headers = _headers()

    def generate(self, prompts: list[Messages], n: int, sampling: Sampling) -> list[list[str]]:
        return _together(lambda prompt: self._complete(prompt, n, sampling), prompts)

    def _complete(self, prompt: Messages, n: int, sampling: Sampling) -> list[str]:
        messages, options = template_args(prompt)
        body = {"model": self.model, "messages": messages, "n": n, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "max_tokens": sampling.max_new_tokens}  # fmt: skip
        if options.get("tools"):  # the server renders them with the model's template and parses the calls
            body["tools"] = options["tools"]
        if "enable_thinking" in options:  # vLLM passes these to the chat template
            body["chat_template_kwargs"] = {"enable_thinking": options["enable_thinking"]}
        try:
            response = httpx.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
            response.raise_for_status()
            choices = response.json()["choices"]
        except (httpx.HTTPError, KeyError, ValueError) as e:
            raise RwmlError(
                f"The user endpoint {self.url} (env.user_endpoints, model {self.model!r}) failed: {e}. Check that the "
                "server runs and serves that model, or remove it from env.user_endpoints (an empty list lets the "
                "recipe's own model play the user)."
            ) from None
        return [Completion.of(_as_text(c["message"]), truncated=c.get("finish_reason") == "length") for c in choices]


def _together(complete, prompts: list) -> list:
    """`complete(prompt)` for every prompt at once (the server batches what is in flight), in order; after a
    failure nothing more is sent."""
    pool = ThreadPoolExecutor(max_workers=max(1, min(MAX_CONCURRENT, len(prompts))))
    try:
        return list(pool.map(complete, prompts))
    finally:
        pool.shutdown(cancel_futures=True)


def _as_text(message: dict) -> str:
    """A chat reply as the text a local model would have written: its content, then its tool calls in
    Qwen3's native form (what the tau2 environment reads)."""
    calls = [
        f'<tool_call>\n{{"name": {json.dumps(c["function"]["name"])}, "arguments": {c["function"]["arguments"]}}}\n</tool_call>'
        for c in message.get("tool_calls") or []
    ]
    return "\n".join([message.get("content") or "", *calls]).strip() if calls else message.get("content") or ""


class ServedGenerator:
    """Sampling from the recipe's vLLM server: the prompt is rendered here, with the recipe's tokenizer and
    chat template and the prefill appended, exactly as the local backends render it, and sent as text
    to /v1/completions; the reply is parsed here too (actions, tool calls), so the server needs no chat
    template, reasoning or tool-call parser of its own."""

    def __init__(self, server: ServerSettings, settings, model: str):
        from transformers import AutoTokenizer

        from rwml_lite.models import use_chat_template
        from rwml_lite.sources import checkpoint_folder

        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint_folder(settings.name_or_path))
        use_chat_template(self.tokenizer, settings)
        self.url, self.model, self.timeout = _api(server) + "/completions", model, server.timeout
        self.headers = _headers()

    def generate(self, prompts: list[Messages], n: int, sampling: Sampling) -> list[list[str]]:
        from rwml_lite.models.hf import render_prompt

        sampling.require_distinct(n)
        texts = [render_prompt(self.tokenizer, p, sampling.prefill) for p in prompts]
        stop = stop_ids(self.tokenizer)  # the server's generation config is not ours to read
        return [
            [
                Completion.of(
                    sampling.prefill + c["text"], c.get("finish_reason") == "length", c.get("token_ids"), stop
                )
                for c in choices
            ]
            for choices in self._complete_all(texts, n, sampling, {"return_token_ids": True})
        ]

    def sampled_tokens(self, texts: list[str], sampling: Sampling) -> dict[str, list]:
        """One completion of each rendered prompt as TRL's GRPO `rollout_func` returns them: the prompt's and
        the completion's token ids and each sampled token's log-prob (vLLM's `logprobs: 0`, the ids by
        `return_tokens_as_token_ids`)."""
        extra = {"logprobs": 0, "return_tokens_as_token_ids": True}
        sampled = [choices[0]["logprobs"] for choices in self._complete_all(texts, 1, sampling, extra)]
        return {
            "prompt_ids": [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts],
            "completion_ids": [[int(token.removeprefix("token_id:")) for token in s["tokens"]] for s in sampled],
            "logprobs": [s["token_logprobs"] for s in sampled],
        }

    def _complete_all(self, texts: list[str], n: int, sampling: Sampling, extra: dict) -> list[list[dict]]:
        with httpx.Client(headers=self.headers, timeout=self.timeout) as client:
            return _together(lambda text: self._complete(client, text, n, sampling, extra), texts)

    def _complete(self, client: httpx.Client, text: str, n: int, sampling: Sampling, extra: dict) -> list[dict]:
        body = {"model": self.model, "prompt": text, "n": n, "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_new_tokens, "skip_special_tokens": True, **NEUTRAL, **AS_RENDERED, **extra}  # fmt: skip
        try:
            response = client.post(self.url, json=body)
            response.raise_for_status()
            choices = response.json()["choices"]
            if any("text" not in c for c in choices):
                raise KeyError("text")
        except httpx.HTTPStatusError as e:
            raise RwmlError(
                f"The vLLM server {self.url} (model.server) refused a request for {self.model!r}: "
                f"{e.response.status_code} {e.response.text[:300]}"
            ) from None
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as e:
            raise RwmlError(
                f"The vLLM server {self.url} (model.server) failed: {e!r}. Check that it runs and serves {self.model!r}, "
                "or set model.server to null to sample in this process."
            ) from None
        return choices


def _api(server: ServerSettings) -> str:
    """The server's API root: its URL with /v1, whether or not the recipe wrote it."""
    return server.url.rstrip("/").removesuffix("/v1") + "/v1"


def _headers() -> dict[str, str]:
    key = os.environ.get("OPENAI_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def served_generator(settings, adapter: Path | None = None) -> ServedGenerator:
    """Sampling from the recipe's vLLM server (`model.server`): the served base model, or a saved LoRA
    adapter that the server loads by path (vLLM's /v1/load_lora_adapter; the server runs with
    --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and sees the run folder at the same path)."""
    server = settings.server
    model = server.model or settings.name_or_path
    if adapter is not None:
        adapter = Path(adapter).resolve()
        weights = next(iter(sorted(adapter.glob("adapter_model.*"))), None)
        if weights is None:
            raise RwmlError(f"{adapter} holds no adapter_model.safetensors: it is not a saved adapter.")
        model = f"rwml-lite:{adapter}:{weights.stat().st_mtime_ns}"  # a new save is a new name
        if is_main():  # once: the others sample it by name after the barrier
            _load_adapter(server, model, adapter)
        barrier()
    return ServedGenerator(server, settings, model)


def _load_adapter(server: ServerSettings, model: str, adapter: Path) -> None:
    try:
        response = httpx.post(f"{_api(server)}/load_lora_adapter", json={"lora_name": model, "lora_path": str(adapter)},
                              headers=_headers(), timeout=server.timeout)  # fmt: skip
    except httpx.HTTPError as e:
        raise RwmlError(f"The vLLM server {server.url} (model.server.url) could not be reached: {e!r}.") from None
    if response.status_code != 200 and "already been loaded" not in response.text:
        raise RwmlError(
            f"The vLLM server {server.url} (model.server.url) did not load the adapter {adapter}: "
            f"{response.status_code} {response.text[:300]}. Start it with --enable-lora, --max-lora-rank at least "
            "model.lora.r, and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, on a machine that sees the run folder."
        )


def unload_adapter(settings, name: str) -> None:
    """Drop an adapter `served_generator` loaded (the policy stage loads one per step); one the server
    no longer holds is fine."""
    server = settings.server
    try:
        response = httpx.post(f"{_api(server)}/unload_lora_adapter", json={"lora_name": name}, headers=_headers(),
                              timeout=server.timeout)  # fmt: skip
    except httpx.HTTPError as e:
        raise RwmlError(f"The vLLM server {server.url} (model.server.url) could not be reached: {e!r}.") from None
    if response.status_code not in (200, 404):
        raise RwmlError(
            f"The vLLM server {server.url} (model.server.url) did not unload the adapter {name}: "
            f"{response.status_code} {response.text[:300]}."
        )
