"""A `Generator` over an OpenAI-compatible chat endpoint (vLLM's server, llama.cpp's, OpenAI's): what
plays the customer in tau2 conversations when the recipe lists it in `env.user_endpoints`. (The NL
judge, `env.judge_endpoint`, is called by upstream's evaluator through litellm.)"""

from __future__ import annotations

import json
import os

import httpx

from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling
from rwml_lite.prompts import Messages, template_args


class EndpointGenerator:
    def __init__(self, base_url: str, model: str, timeout: float = 120.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout = model, timeout
        self.name = f"{model} at {base_url}"  # what episode records say played the user
        key = os.environ.get("OPENAI_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def generate(self, prompts: list[Messages], n: int, sampling: Sampling) -> list[list[str]]:
        results = []
        for prompt in prompts:
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
                    f"The user endpoint {self.url} (env.user_endpoints, model {self.model!r}) failed: {e}. Check that "
                    "the server runs and serves that model, or remove it from env.user_endpoints (an empty list lets "
                    "the recipe's own model play the user)."
                ) from None
            results.append([_as_text(c["message"]) for c in choices])
        return results


def _as_text(message: dict) -> str:
    """A chat reply as the text a local model would have written: its content, then its tool calls in
    Qwen3's native form (what the tau2 environment reads)."""
    calls = [
        f'<tool_call>\n{{"name": {json.dumps(c["function"]["name"])}, "arguments": {c["function"]["arguments"]}}}\n</tool_call>'
        for c in message.get("tool_calls") or []
    ]
    return "\n".join([message.get("content") or "", *calls]).strip() if calls else message.get("content") or ""
