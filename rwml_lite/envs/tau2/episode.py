"""A tau2 conversation as a `TextEnv`: the agent's turn is one action, the environment answers.

The agent opens with a fixed greeting; the simulated user (any `Generator`: the local model or an
endpoint) answers from its scenario. Each agent action is either a message to the user (the user
simulator replies) or one or more tool calls written as `<tool_call>{"name": ..., "arguments": {...}}
</tool_call>` (the tools reply). A call that is not valid JSON, names no known tool or lacks an
argument is answered with an error tool message and counted as invalid; the conversation goes on.
In telecom the user has tools too (their phone): the simulator may answer the agent with tool calls
in the same format, sees their results, and goes on until it writes a message, which is all the agent
sees. The user ends it with ###STOP###, ###TRANSFER### or ###OUT-OF-SCOPE###; the step or error limit
ends it too, and then it scores 0. At the end the episode is scored as upstream does (scoring.py),
with the NL assertions put to the judge when the recipe names one (judge.py).
"""

from __future__ import annotations

import json
import re
from collections import abc
from typing import Any

from rwml_lite.envs.base import Step
from rwml_lite.envs.tau2.data import data_root, domain
from rwml_lite.envs.tau2.judge import judge
from rwml_lite.envs.tau2.scoring import DEFAULT_BASIS, score
from rwml_lite.envs.tau2.toolkit import Reply
from rwml_lite.errors import RwmlError
from rwml_lite.models import Generator, Sampling
from rwml_lite.prompts import Messages

GREETING = "Hi! How can I help you today?"
STOP_TOKENS = ("###STOP###", "###TRANSFER###", "###OUT-OF-SCOPE###")
MAX_USER_TOOL_ROUNDS = 5  # [ours] tool calls the user may make before their message to the agent
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


def parse_tool_calls(action: str) -> list[dict | str] | None:
    """The tool calls in an agent action ({"name", "arguments"}, or the error text of a malformed one),
    or None when the action is a message to the user."""
    bodies = _TOOL_CALL.findall(action)
    if not bodies:
        return None
    calls: list[dict | str] = []
    for body in bodies:
        try:
            call = json.loads(body)
        except json.JSONDecodeError as e:
            calls.append(f"Error: the tool call is not valid JSON ({e.msg} at character {e.pos}).")
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            calls.append('Error: a tool call must be a JSON object {"name": ..., "arguments": {...}}.')
            continue
        calls.append({"name": call["name"], "arguments": call.get("arguments", {})})
    return calls


def tool_lines(schemas: list[dict]) -> str:
    """One line per tool, `name(arg: type, ...): description`: the schemas in few tokens."""
    lines = []
    for schema in schemas:
        props = schema["parameters"]["properties"]
        args = ", ".join(f"{name}: {spec['type']}" for name, spec in props.items())
        lines.append(f"- {schema['name']}({args}): {schema['description']}")
    return "\n".join(lines)


def scenario_text(task: dict) -> str:
    """The user's scenario as the simulator reads it: who they are, why they call, what they know."""
    instructions = task["user_scenario"]["instructions"]
    parts = [
        ("Persona", task["user_scenario"].get("persona")),
        ("Reason for call", instructions.get("reason_for_call")),
        ("Known info", instructions.get("known_info")),
        ("Unknown info", instructions.get("unknown_info")),
        ("Task instructions", instructions.get("task_instructions")),
    ]
    return "\n\n".join(f"{name}:\n{text}" for name, text in parts if text)


Conversation = abc.Generator[Messages, str, Any]  # yields the user simulator's prompts, returns the outcome


def run_conversations(conversations: list[Conversation], user: Generator, sampling: Sampling) -> list:
    """Drive conversations side by side: whenever they wait for the simulated user, one generate call
    answers all of them (in collect, every live conversation's user turn in one batch). Returns each
    one's outcome in order, or the exception it raised."""
    outcomes: list = [None] * len(conversations)
    waiting: dict[int, Messages] = {}

    def advance(i: int, reply: str | None) -> None:
        try:
            waiting[i] = conversations[i].send(reply)
        except StopIteration as done:
            outcomes[i] = done.value
        except Exception as e:  # carried back to the caller, as from worker processes
            outcomes[i] = e

    for i in range(len(conversations)):
        advance(i, None)
    while waiting:
        asked, prompts = list(waiting), list(waiting.values())
        waiting.clear()
        for i, [reply] in zip(asked, user.generate(prompts, 1, sampling)):
            advance(i, reply)
    return outcomes


class Tau2Env:
    """Conversations of the given domains; task ids are "<domain>/<task id>"."""

    role = "You are a customer service agent. Follow the policy; use the tools to look things up and to act."

    def __init__(self, domains: list[str], max_steps: int, user: Generator, user_sampling: Sampling, max_errors: int = 10,
                 judge: Generator | None = None):  # fmt: skip
        self.domains, self.max_steps, self.max_errors = domains, max_steps, max_errors
        self.user, self.user_sampling, self.judge = user, user_sampling, judge
        folder = data_root() / "user_simulator"
        self.guidelines = {
            tools: (folder / f"simulation_guidelines{'_tools' if tools else ''}.md").read_text()
            for tools in (False, True)
        }

    def tasks(self, split: str) -> list[str]:
        return [f"{name}/{task_id}" for name in self.domains for task_id in domain(name).task_ids(split)]

    def task_type(self, task_id: str) -> str:
        return task_id.split("/", 1)[0]

    def admissible_actions(self) -> None:
        return None  # free text and tool calls

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ one conversation

    def reset(self, task_id: str, seed: int) -> str:
        return self._alone(self.conversation("reset", (task_id, seed)))

    def step(self, action: str) -> Step:
        return self._alone(self.conversation("step", action))

    def _alone(self, conversation: Conversation):
        [outcome] = run_conversations([conversation], self.user, self.user_sampling)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def conversation(self, kind: str, arg) -> Conversation:
        """A reset ((task id, seed)) or step (action) as a coroutine that yields each prompt of the user
        simulator and is sent its reply, so that `run_conversations` can answer many with one call."""
        return self._opening(*arg) if kind == "reset" else self._turn(arg)

    def _opening(self, task_id: str, seed: int) -> Conversation:
        name, _, local_id = task_id.partition("/")
        self.domain = domain(name)
        if local_id not in self.domain.tasks:
            raise RwmlError(f"tau2 {name} has no task {local_id!r}; task ids come from its split_tasks.json.")
        self.task = self.domain.tasks[local_id]
        self.tools = self.domain.fresh_tools(self.task)
        self.phone = self.tools.side("user")
        user_has_tools = self.phone is not self.tools
        tools = tool_lines(self.tools.schemas())
        self.goal = (
            "Serve the customer under the policy below. Each action is either a message to the customer or "
            'tool calls written as <tool_call>{"name": "...", "arguments": {...}}</tool_call>, never both.\n\n'
            f"Tools:\n{tools}\n\nPolicy:\n{self.domain.policy}"
        )
        # PAPER.md: the world model sees the user's profile facts, not their intent (nor the agent's policy)
        known = self.task["user_scenario"]["instructions"].get("known_info") or "(none given)"
        self.world_goal = (
            f"A customer-service conversation ({name}). The agent acts with messages or tool calls.\n\n"
            f"Tools:\n{tools}\n\nWhat the customer knows about themselves:\n{known}"
        )
        self.calls: list[dict] = []
        self.transcript: list[tuple[str, str]] = [("Agent", GREETING)]  # what the judge reads
        self.steps = self.errors = 0
        # the simulator plays the user: its own turns are "assistant", the agent's are "user"
        system = f"{self.guidelines[user_has_tools]}\n\n<scenario>\n{scenario_text(self.task)}\n</scenario>"
        if user_has_tools:
            system += (
                f"\n\nYour tools, on your own phone:\n{tool_lines(self.phone.schemas())}\n\nTo use one, reply with only "
                '<tool_call>{"name": "...", "arguments": {...}}</tool_call>; you will see its result before you answer the agent.'
            )
        self.user_view = [{"role": "system", "content": system}, {"role": "user", "content": GREETING}]
        first, self.stopped = yield from self._user_turn()
        return f"User: {first}"

    def _say(self, speaker: str, text: str) -> None:
        self.transcript.append((speaker, text))

    def _user_turn(self) -> abc.Generator[Messages, str, tuple[str, bool]]:
        """The user's next message; on the way they may use their own tools, whose results only they see."""
        for _ in range(MAX_USER_TOOL_ROUNDS + 1):
            reply = (yield self.user_view).strip()
            self.user_view.append({"role": "assistant", "content": reply})
            calls = parse_tool_calls(reply) if self.phone is not self.tools else None
            if not calls:
                break
            self.user_view.append({"role": "user", "content": self._run(calls, "user")[0]})
        self._say("Customer", reply)
        return reply, any(token in reply for token in STOP_TOKENS)

    def _run(self, calls: list[dict | str], requestor: str) -> tuple[str, int]:
        """Run parsed calls on the requestor's side: the tool replies as one text, and how many failed."""
        lines, failed = [], 0
        for call in calls:
            if isinstance(call, str):  # a malformed call: its error text
                reply, name = Reply(call, False), "unparsed"
            else:
                reply, name = self.tools.side(requestor).call(call["name"], call["arguments"]), call["name"]
                self.calls.append(
                    {**call, "requestor": requestor}
                )  # replayed for scoring: writes only, refused ones change nothing
                self._say(
                    f"{'Agent' if requestor == 'assistant' else 'Customer'} tool call",
                    f"{name}({json.dumps(call['arguments'])}) -> {reply.content}",
                )
            lines.append(f"Tool ({name}): {reply.content}")
            failed += not reply.ok
        return "\n".join(lines), failed

    def _turn(self, action: str) -> Conversation:
        self.steps += 1
        calls = parse_tool_calls(action)
        if calls is None:
            self._say("Agent", action)
            self.user_view.append({"role": "user", "content": action})
            reply, self.stopped = yield from self._user_turn()
            observation, valid, kind = f"User: {reply}", True, "user"
        else:
            observation, failed = self._run(calls, "assistant")
            valid, kind = not failed, "tool"
            self.errors += failed
        limited = self.steps >= self.max_steps or self.errors > self.max_errors
        done = self.stopped or limited
        info = {"kind": kind}
        reward = 0.0
        if done:
            said = [text for speaker, text in self.transcript if speaker == "Agent"]
            result = score(
                self.domain, self.task, self.calls, said, ended_normally=self.stopped, nl_verdicts=self._verdicts()
            )
            reward = result.reward
            info.update(
                score_parts=result.parts, nl_unscored=result.nl_unscored, ended="user" if self.stopped else "limit"
            )
        return Step(observation, reward, done, done and reward == 1.0, valid, info)

    def _verdicts(self) -> list[bool] | None:
        """The judge's verdicts on the task's NL assertions, when there is a judge and they count."""
        criteria = self.task["evaluation_criteria"]
        assertions = criteria.get("nl_assertions") or []
        if not (
            self.judge
            and self.stopped
            and assertions
            and "NL_ASSERTION" in (criteria.get("reward_basis") or DEFAULT_BASIS)
        ):
            return None
        return judge(self.judge, self.transcript, assertions)
