"""The LLM-as-a-judge world-model reward against a real HTTP server on localhost: one batched
request per GRPO step, malformed answers and timeouts retried, then scored 0 and counted."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rwml_lite.config import RewardSettings
from rwml_lite.errors import RwmlError
from rwml_lite.reward.judge import JudgeReward, parse_score

#: prediction -> the judge's answers, one per time it is asked (the last one repeats)
ANSWERS = {
    "You take the clean brown shirt.": ['{"analysis": "all facts present", "score": 1}'],
    "You open the wardrobe.": ["I would say it is mostly right.", '```json\n{"analysis": "no", "score": 0}\n```'],
    "Something happens.": ["score: high"],  # never valid JSON
    "You see a shirt.": ['{"analysis": "half of it", "score": 0.5}'],
}


class Judge(BaseHTTPRequestHandler):
    batched = True
    delay_first = 0.0
    busy_first = False
    paths: list[str] = []
    asked: dict[str, int] = {}

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).paths.append(self.path)
        if self.path.endswith("/batch") and not self.batched:
            self.send_response(404)
            self.end_headers()
            return
        if type(self).busy_first:
            type(self).busy_first = False
            self.send_response(503)
            self.end_headers()
            return
        if type(self).delay_first:
            delay, type(self).delay_first = type(self).delay_first, 0.0
            time.sleep(delay)
        conversations = body["messages"] if self.path.endswith("/batch") else [body["messages"]]
        choices = []
        for i, messages in enumerate(conversations):
            prediction = messages[-1]["content"].split("Predicted next observation:\n")[1].split("\n\n")[0]
            n = self.asked[prediction] = self.asked.get(prediction, 0) + 1
            answers = ANSWERS[prediction]
            choices.append({"index": i, "message": {"role": "assistant", "content": answers[min(n, len(answers)) - 1]}})
        payload = json.dumps({"choices": choices[::-1]}).encode()  # the order of choices is their index's business
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    Judge.paths, Judge.asked, Judge.batched, Judge.delay_first, Judge.busy_first = [], {}, True, 0.0, False
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def reward(url: str, kind: str = "judge_binary", **fields) -> JudgeReward:
    return JudgeReward(RewardSettings(kind=kind, judge_endpoint=url, **fields), prefill="<think> </think><next_state>")


def call(judge: JudgeReward, predictions: list[str]) -> tuple[list[float], list[float]]:
    """The reward of TRL-style completions (after the prefill), and what the judge logged."""
    logged = []
    rewards = judge(
        prompts=["p"] * len(predictions),
        completions=[f"{p}</next_state>" if p is not None else "no tag at all" for p in predictions],
        real_next_state=["You take the clean brown shirt from the floor."] * len(predictions),
        observation=["You are in the bedroom. You see a clean brown shirt."] * len(predictions),
        action=["take clean brown shirt"] * len(predictions),
        log_metric=lambda name, value: logged.append((name, value)),
    )
    return rewards, logged


def test_one_batched_request_scores_every_prediction_of_a_step(judge_server):
    judge = reward(judge_server)
    rewards, logged = call(judge, ["You take the clean brown shirt.", None, "You take the clean brown shirt."])
    assert rewards == [1.0, 0.0, 1.0]  # no <next_state> tag: 0, and the judge is not asked
    assert Judge.paths == ["/v1/chat/completions/batch"]
    assert logged == [("judge_failed", 0), ("tag_rate", pytest.approx(2 / 3))]  # the signal monitor reads the tags


def test_malformed_answers_are_asked_again_then_scored_zero_and_counted(judge_server):
    judge = reward(judge_server, judge_retries=2)
    rewards, logged = call(judge, ["You take the clean brown shirt.", "You open the wardrobe.", "Something happens."])
    assert rewards == [1.0, 0.0, 0.0]  # the second answered properly the second time: score 0
    assert Judge.asked == {"You take the clean brown shirt.": 1, "You open the wardrobe.": 2, "Something happens.": 3}
    # one batched request, then only the unanswered ones, one request each: two, then one
    assert Judge.paths == ["/v1/chat/completions/batch"] + ["/v1/chat/completions"] * 3
    assert logged == [("judge_failed", 1), ("tag_rate", 1.0)] and judge.failed == 1


def test_a_binary_judge_must_answer_0_or_1_and_a_continuous_one_a_share(judge_server):
    assert call(reward(judge_server, "judge_continuous"), ["You see a shirt."])[0] == [0.5]
    assert call(reward(judge_server, "judge_binary", judge_retries=0), ["You see a shirt."]) == (
        [0.0],
        [("judge_failed", 1), ("tag_rate", 1.0)],
    )
    assert parse_score("judge_binary", '<think>hm {"score": 5}</think>{"analysis": "x", "score": 1.0}') == 1.0
    assert parse_score("judge_continuous", '{"analysis": "x", "score": 1.5}') is None
    assert parse_score("judge_continuous", '{"analysis": "x"}') is None


def test_a_timed_out_or_refused_request_is_sent_again(judge_server):
    Judge.delay_first = 2.0
    rewards, logged = call(reward(judge_server, judge_timeout=0.5), ["You take the clean brown shirt."])
    assert rewards == [1.0] and logged == [("judge_failed", 0), ("tag_rate", 1.0)]
    assert Judge.paths == ["/v1/chat/completions/batch", "/v1/chat/completions"]  # the retry does not batch
    Judge.busy_first = True  # 503: a busy server is asked again, not given up on
    assert call(reward(judge_server), ["You take the clean brown shirt."]) == (
        [1.0],
        [("judge_failed", 0), ("tag_rate", 1.0)],
    )


def test_a_server_without_the_batch_endpoint_gets_one_request_per_prediction(judge_server):
    Judge.batched = False
    judge = reward(judge_server)
    assert call(judge, ["You take the clean brown shirt.", "You take the clean brown shirt."])[0] == [1.0, 1.0]
    assert Judge.paths == ["/v1/chat/completions/batch"] + ["/v1/chat/completions"] * 2
    call(judge, ["You take the clean brown shirt."])
    assert Judge.paths[-1] == "/v1/chat/completions" and len(Judge.paths) == 4  # it does not try the batch again


def test_an_unreachable_judge_is_one_paragraph_naming_the_fields():
    with pytest.raises(RwmlError, match=r"reward\.judge_endpoint.*reward\.judge_model"):
        call(reward("http://127.0.0.1:9/v1"), ["You take the clean brown shirt."])
    with pytest.raises(ValueError, match="needs reward.judge_endpoint"):
        RewardSettings(kind="judge_binary")


def test_the_judge_is_asked_the_papers_question_and_the_vague_prediction_guard_is_ours_and_off():
    """Table A8's judge: every important task-related fact of the real observation in the prediction scores 1.0.
    The guard against vague predictions, the very hacking the ablation reproduces, is only added when asked."""
    from rwml_lite.reward.judge import judge_messages

    paper = judge_messages("judge_binary", "You are in the kitchen.", "open fridge", "It opens.", "The fridge is open.")
    guarded = judge_messages("judge_binary", "s", "a", "p", "r", guard=True)
    assert "every important task-related fact of the real observation" in paper[0]["content"]
    assert "vague" not in paper[0]["content"].lower() and "vague" in guarded[0]["content"].lower()
    assert "Predicted next observation:\nIt opens." in paper[1]["content"] and "0 or 1" in paper[1]["content"]
