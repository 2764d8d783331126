"""A `Generator` over an OpenAI-compatible chat endpoint (vLLM's server, llama.cpp's, OpenAI's):
what plays the customer in tau2 conversations when the recipe names `env.user_endpoint`, and what
judges NL assertions when it names `env.judge_endpoint`."""

from __future__ import annotations

import json
import os

import httpx

from rwml_lite.errors import RwmlError
from rwml_lite.models import Sampling
from rwml_lite.prompts import Messages, template_args


class EndpointGenerator:
    def __init__(self, base_url: str, model: str, role: str = "user", timeout: float = 120.0):
        """role: "user" or "judge", the recipe fields env.<role>_endpoint / env.<role>_model it came from."""
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.role, self.timeout = model, role, timeout
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
                fallback = (
                    "to let the recipe's own model play the user"
                    if self.role == "user"
                    else "to leave NL assertions unscored"
                )
                raise RwmlError(
                    f"The {self.role} endpoint {self.url} (env.{self.role}_endpoint, model {self.model!r}) failed: {e}. "
                    f"Check that the server runs and serves that model (env.{self.role}_model), or set "
                    f"env.{self.role}_endpoint=null {fallback}."
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
