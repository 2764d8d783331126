"""The LLM-as-a-judge world-model reward: the paper's weaker ablation (docs/paper.md, Table A8).

A judge model behind an OpenAI-compatible server sees the current state, the action, the predicted
next observation (the `<next_state>` text) and the real one, and answers JSON with an analysis and
a score: 1.0 when every important task-related fact of the real observation is in the prediction.
`judge_binary` asks for 0 or 1, `judge_continuous` for a number in [0, 1]. The paper shows this
reward being hacked by vague predictions; it is here to reproduce that, not to train with.

All predictions of a GRPO step go to the judge in one request (vLLM's `/chat/completions/batch`,
one conversation per prediction); a server without that endpoint gets one request per prediction,
sent together. A prediction whose request timed out or met a busy server (429, 5xx), or whose
answer holds no valid score, is asked again up to `reward.judge_retries` times, then scored 0 and
counted (`judge_failed` in the metrics); a server that cannot be reached ends the run with a
message naming the recipe fields.
A completion without a `<next_state>` tag scores 0 without asking.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from rwml_lite.config import RewardSettings
from rwml_lite.errors import RwmlError
from rwml_lite.prompts import closed_at_end, extract_next_state

#: The paper's judge instruction (docs/paper.md, Table A8): current state, action, predicted and real next observation;
#: 1.0 when every important task-related fact of the real observation is in the prediction; JSON with an analysis
#: and a score.
SYSTEM = (
    "You judge a world model of a text environment. You are given the current state, an action, the model's "
    "prediction of the next observation and the real next observation. Score 1.0 when every important "
    "task-related fact of the real observation is in the prediction. "
    'Answer with JSON only: {"analysis": "<one or two sentences>", "score": <score>}.'
)
#: [ours] reward.judge_guard: a guard against the vague predictions that hack the paper's judge (its Table 4: 14.5
#: and 3.6 on ALFWorld); off by default, since the ablation exists to show that hacking.
GUARD = " Vague or generic predictions do not count."
SCALES = {
    "judge_binary": "The score is 0 or 1.",
    "judge_continuous": "The score is a number between 0 and 1: the share of those facts the prediction gets right.",
}
_JSON = re.compile(r"\{.*\}", re.S)
_THINK = re.compile(r"<think>.*?</think>", re.S)


def judge_messages(
    kind: str, observation: str, action: str, prediction: str, real: str, guard: bool = False
) -> list[dict]:
    user = (
        f"Current state:\n{observation}\n\nAction: {action}\n\nPredicted next observation:\n{prediction}\n\n"
        f"Real next observation:\n{real}\n\n{SCALES[kind]}"
    )
    return [{"role": "system", "content": SYSTEM + (GUARD if guard else "")}, {"role": "user", "content": user}]


def parse_score(kind: str, answer: str) -> float | None:
    """The judge's score, or None when the answer holds no JSON object with a valid `score`."""
    found = _JSON.search(_THINK.sub("", answer or ""))
    try:
        score = float(json.loads(found.group())["score"]) if found else None
    except (ValueError, KeyError, TypeError):
        return None
    if score is None or not 0.0 <= score <= 1.0 or (kind == "judge_binary" and score not in (0.0, 1.0)):
        return None
    return score


class JudgeReward:
    """A TRL reward function scoring predictions with the judge; `failed` counts the predictions
    that scored 0 because no valid answer came back."""

    def __init__(self, settings: RewardSettings, prefill: str = "", close_at_end: bool = False):
        """`prefill` and `close_at_end` as NextStateReward takes them (worldmodel.prefill, worldmodel.close_at_end)."""
        self.kind, self.prefill, self.model, self.guard = (
            settings.kind,
            prefill,
            settings.judge_model,
            settings.judge_guard,
        )
        self.close_at_end = close_at_end
        self.base = settings.judge_endpoint.rstrip("/")
        self.timeout, self.retries = settings.judge_timeout, settings.judge_retries
        key = os.environ.get("OPENAI_API_KEY")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.batched = True  # until the server says it has no batch endpoint
        self.requests = self.failed = 0
        self.__name__ = "judge_reward"  # TRL names the logged reward column after this

    def score(self, completions: list[str], real_states: list[str], observations: list[str], actions: list[str]):
        """The judge's score of each completion (a whole assistant turn, prefill included)."""
        predictions = [extract_next_state(c) for c in completions]
        asked = [i for i, p in enumerate(predictions) if p is not None]
        conversations = {
            i: judge_messages(self.kind, observations[i], actions[i], predictions[i], real_states[i], self.guard)
            for i in asked
        }
        scores: dict[int, float] = {}
        for attempt in range(self.retries + 1):
            pending = [i for i in asked if i not in scores]
            if not pending:
                break
            for i, answer in zip(pending, self._ask([conversations[i] for i in pending], retry=attempt > 0)):
                score = parse_score(self.kind, answer) if answer is not None else None
                if score is not None:
                    scores[i] = score
        failed = len(asked) - len(scores)
        self.failed += failed
        return [scores.get(i, 0.0) for i in range(len(completions))], failed

    def __call__(self, prompts, completions, real_next_state, observation, action, log_metric=None, **kwargs):
        turns = [self.prefill + c for c in completions]  # TRL's completions start after the prompt's prefill
        turns = [closed_at_end(t) for t in turns] if self.close_at_end else turns
        rewards, failed = self.score(turns, list(real_next_state), list(observation), list(action))
        if log_metric is not None:
            log_metric("judge_failed", failed)
            log_metric("tag_rate", sum(extract_next_state(t) is not None for t in turns) / len(turns))
        return rewards

    def _ask(self, conversations: list[list[dict]], retry: bool) -> list[str | None]:
        """One answer per conversation, None where it timed out or the server was busy (429, 5xx).
        The first try is one batched request at temperature 0; retries (and servers without the batch
        endpoint) send one request per conversation, together, at temperature 0.7: a batch that timed
        out would time out again, and a malformed answer asked again greedily comes back the same."""
        body = {"model": self.model, "temperature": 0.7 if retry else 0.0, "max_tokens": 256}
        if self.batched and not retry:
            response = self._post("/chat/completions/batch", {**body, "messages": conversations})
            if response is not None and response.status_code in (404, 405):
                self.batched = False  # not vLLM: one request per conversation from here on
            else:
                choices = self._choices(response)
                return [None] * len(conversations) if choices is None else [c["message"]["content"] for c in choices]
        with ThreadPoolExecutor(max_workers=min(32, len(conversations))) as pool:
            replies = pool.map(
                lambda m: self._choices(self._post("/chat/completions", {**body, "messages": m})), conversations
            )
            return [None if r is None else r[0]["message"]["content"] for r in replies]

    def _post(self, path: str, body: dict) -> httpx.Response | None:
        """The server's response, or None when the request timed out."""
        self.requests += 1
        try:
            return httpx.post(self.base + path, json=body, headers=self.headers, timeout=self.timeout)
        except httpx.TimeoutException:
            return None
        except httpx.HTTPError as e:  # refused, unreachable, broken connection
            raise self._unreachable(e) from None

    def _choices(self, response: httpx.Response | None) -> list[dict] | None:
        """The answers in index order; None for a timeout or a busy server (asked again later)."""
        if response is None or response.status_code == 429 or response.status_code >= 500:
            return None
        try:
            response.raise_for_status()
            return sorted(response.json()["choices"], key=lambda c: c.get("index", 0))
        except (httpx.HTTPError, ValueError, KeyError) as e:
            raise self._unreachable(e) from None

    def _unreachable(self, error: Exception) -> RwmlError:
        return RwmlError(
            f"The judge endpoint {self.base} (reward.judge_endpoint, model {self.model!r}) failed: {error}. Check "
            f"that the server runs and serves that model (reward.judge_model), or use reward.kind=binary."
        )
