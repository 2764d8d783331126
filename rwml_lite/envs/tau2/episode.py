"""A tau2 conversation as a `TextEnv`, run by upstream's own orchestrator.

Upstream's `Orchestrator` passes every message: it applies the task's initial state, sends its
greeting, executes each tool call on the caller's side (agent or user) with the tool-sync step after
it, counts steps (every message) and tool errors against their limits, and decides when the
conversation ends; upstream's evaluator scores it. Only the two LLM calls are ours: upstream's agent
(`LLMAgent`: its system prompt and tools) and user simulator (`UserSimulator`: its guidelines and the
task's scenario) take the reply our batched loop sampled instead of calling litellm one turn at a
time. So the agent's prompt (`agent_prompt`) is what upstream would send its LLM, and a conversation
is a coroutine that yields each prompt of the user simulator, so that `run_conversations` answers
the user turns of many conversations with one generate call.

Replies are read in Qwen3's native tool-call form, `<tool_call>{"name": ..., "arguments": {...}}
</tool_call>`, with the text before the first call as the content (as vLLM's hermes parser splits
them) and any `<think>` part dropped, so no reasoning reaches the other side or the records.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import abc
from typing import Any

from rwml_lite.envs.base import Step
from rwml_lite.envs.tau2.masking import mask_tool_observation
from rwml_lite.envs.tau2.upstream import domain, tau2
from rwml_lite.models import Generator, Sampling
from rwml_lite.prompts import Messages, with_template_args, without_thinking

_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)

#: [ours] times the user simulator is asked again after an empty reply before the conversation ends
#: as upstream ends one whose user fails (USER_ERROR); upstream's litellm call retries empty replies too.
USER_RETRIES = 3

tau2()
from tau2.agent.base import is_valid_agent_history_message  # noqa: E402
from tau2.agent.llm_agent import LLMAgent  # noqa: E402
from tau2.data_model.message import (  # noqa: E402
    AssistantMessage,
    MultiToolMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from tau2.data_model.simulation import SimulationRun, TerminationReason  # noqa: E402
from tau2.data_model.tasks import RewardType  # noqa: E402
from tau2.evaluator.evaluator import EvaluationType, evaluate_simulation  # noqa: E402
from tau2.orchestrator.orchestrator import Orchestrator, Role  # noqa: E402
from tau2.user.base import UserState, is_valid_user_history_message  # noqa: E402
from tau2.user.user_simulator import UserSimulator  # noqa: E402
from tau2.utils.llm_utils import to_litellm_messages  # noqa: E402


def tool_call(body: str, call_id: str, requestor: str) -> ToolCall:
    """One `<tool_call>` body as upstream's ToolCall. A body that is not a JSON object with a string
    "name" and object "arguments" becomes a call of the tool named by its raw text, which upstream's
    environment answers as it answers any unknown tool (an error reply, counted as an error); the
    evaluator's replay of the conversation then gets the same answer."""
    try:
        call = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON, absurd numbers, absurd nesting
        call = None
    arguments = call.get("arguments", {}) if isinstance(call, dict) else None
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            pass
    if not (isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(arguments, dict)):
        return ToolCall(id=call_id, name=body.strip(), arguments={}, requestor=requestor)
    return ToolCall(id=call_id, name=call["name"], arguments=arguments, requestor=requestor)


def reply_message(text: str, role: str, ids: str, calls: bool = True) -> AssistantMessage | UserMessage | None:
    """A sampled reply as upstream's message of `role` ("assistant" or "user"); None when nothing
    but thinking or whitespace is left. `ids` prefixes the tool calls' ids; `calls=False` (a side
    without tools, to which upstream's LLM call offers none) reads any tool-call text as a message."""
    text = without_thinking(text)
    bodies = _TOOL_CALL.findall(text) if calls else []
    content = (text.split("<tool_call>")[0] if bodies else text).strip() or None
    calls = [tool_call(body, f"{ids}.{i}", role) for i, body in enumerate(bodies)] or None
    if content is None and calls is None:
        return None
    kind = AssistantMessage if role == "assistant" else UserMessage
    return kind(role=role, content=content, tool_calls=calls)


def world_model_context(domain_name: str, policy: str | None, tools: list[dict], task) -> str:
    """What the world model knows of a conversation (docs/paper.md Table A6): the setting, the agent's policy
    (unless left out), the tools, the customer's profile facts (not their intent), and the form of
    what it predicts."""
    known = getattr(task.user_scenario.instructions, "known_info", None) or "(none given)"
    parts = [
        f"A customer-service conversation ({domain_name}) between an agent, who acts by messages to the user "
        "or by tool calls, and a user.",
        f"# Policy\n{policy}" if policy else "",
        "# Tools\n" + "\n".join(tool_line(t) for t in tools),
        f"# User Information\n{known}",
        "# What to predict\nThe response the agent's action gets next: the user's message (User: ...) or the "
        "tools' replies (Tool (name): ...), where a tool reply is given as its JSON schema, every value replaced "
        "by its type, or as its short status or error text; then a line 'Task status: done' or 'Task status: "
        "ongoing' (whether the conversation ends there).",
    ]
    return "\n\n".join(p for p in parts if p)


def tool_line(schema: dict) -> str:
    """One tool as `- name(arg: type, ...): description`: its OpenAI schema in a third of the tokens."""
    function = schema["function"]
    arguments = ", ".join(
        f"{name}: {spec.get('type', 'object')}" for name, spec in function["parameters"]["properties"].items()
    )
    return f"- {function['name']}({arguments}): {function['description']}"


def world_model_target(observation: str, tool: bool, done: bool) -> str:
    """The response as the world model predicts it: tool replies masked to their structure, then the status."""
    response = mask_tool_observation(observation) if tool else observation
    return f"{response}\nTask status: {'done' if done else 'ongoing'}"


def _record(state, message) -> None:
    """Upstream's bookkeeping of an agent's or user's state: what came in, then what it answered."""
    state.messages.extend(message.tool_messages if isinstance(message, MultiToolMessage) else [message])


class _Agent(LLMAgent):
    """Upstream's LLM agent whose LLM call is replaced by `reply`, the message our loop sampled."""

    reply: AssistantMessage | None = None

    def generate_next_message(self, message, state):
        _record(state, message)
        state.messages.append(self.reply)
        return self.reply, state


class _User(UserSimulator):
    """Upstream's user simulator whose LLM call is replaced by `reply`, the message our loop sampled."""

    reply: UserMessage | None = None

    def _generate_next_message(self, message, state):
        _record(state, message)
        state.messages.append(self.reply)
        return self.reply, state


Conversation = abc.Generator[Messages, str, Any]  # yields the user simulator's prompts, returns the outcome


def run_conversations(conversations: list[tuple[Tau2Env, Conversation]]) -> list:
    """Drive (env, conversation) pairs side by side: whenever they wait for their simulated user, one
    generate call per user model answers all of them (in collect, every live conversation's user turn
    in one batch). Returns each one's outcome in order, or the exception it raised."""
    outcomes: list = [None] * len(conversations)
    waiting: dict[int, Messages] = {}

    def advance(i: int, reply: str | None) -> None:
        try:
            waiting[i] = conversations[i][1].send(reply)
        except StopIteration as done:
            outcomes[i] = done.value
        except Exception as e:  # carried back to the caller, as from worker processes
            outcomes[i] = e

    for i in range(len(conversations)):
        advance(i, None)
    while waiting:
        rounds: dict[int, list[int]] = {}  # one batch per user model (the env picked it at reset)
        for i in waiting:
            rounds.setdefault(id(conversations[i][0].user), []).append(i)
        prompts = dict(waiting)
        waiting.clear()
        for asked in rounds.values():
            env = conversations[asked[0]][0]
            replies = env.user.generate([prompts[i] for i in asked], 1, env.user_sampling)
            for i, [reply] in zip(asked, replies):
                advance(i, reply)
    return outcomes


class Tau2Env:
    """Conversations of the given domains; task ids are "<domain>/<task id>". `max_steps` and
    `max_errors` are upstream's limits: steps count every message (agent, user and tool), errors the
    tool calls that failed."""

    role = "You are a customer service agent. Follow the policy; use the tools to look things up and to act."

    def __init__(self, domains: list[str], max_steps: int, users: list[Generator], user_sampling: Sampling,
                 max_errors: int = 10, judged: bool = False, policy_in_world: bool = True):  # fmt: skip
        """`users`: the models that play the customer; the conversation with seed s gets users[s % n], so
        the consecutive seeds of a task's rollouts deal them in turn. `judged`: upstream's NL-assertion
        judge has an endpoint (`upstream.use_judge`); without one, tasks whose reward basis holds NL
        assertions are scored on the rest, and the record says so. `policy_in_world`: the world model's
        prompt holds the agent's policy (docs/paper.md Table A6)."""
        self.domains, self.max_steps, self.max_errors, self.judged = domains, max_steps, max_errors, judged
        self.policy_in_world = policy_in_world
        self.users, self.user_sampling = users, user_sampling

    def tasks(self, split: str) -> list[str]:
        return [f"{name}/{task_id}" for name in self.domains for task_id in domain(name).task_ids(split)]

    def task_type(self, task_id: str) -> str:
        return task_id.split("/", 1)[0]

    def admissible_actions(self) -> None:
        return None  # free text and tool calls

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ what the agent sees

    def agent_prompt(self) -> Messages:
        """What upstream's agent sends its LLM now: its system prompt (instructions + policy), the
        conversation as it sees it, and its tools, which the chat template renders natively."""
        history = [m for m in self.orchestrator.trajectory if is_valid_agent_history_message(m)]
        system = SystemMessage(role="system", content=self.agent.system_prompt)
        return with_template_args(to_litellm_messages([system, *history]), tools=self.agent_tools)

    def _user_prompt(self) -> Messages:
        """What upstream's user simulator sends its LLM now, with its thinking turned off: its system
        prompt, the conversation with the roles flipped (the agent speaks as "user"), its own tools."""
        seen = [m for m in self.orchestrator.trajectory if is_valid_user_history_message(m)]
        flipped = UserState(system_messages=[], messages=seen).flip_roles()
        system = SystemMessage(role="system", content=self.user_sim.system_prompt)
        return with_template_args(to_litellm_messages([system, *flipped]), tools=self.user_tools, enable_thinking=False)

    # ------------------------------------------------------------------ one conversation

    def reset(self, task_id: str, seed: int) -> str:
        return self._alone(self.conversation("reset", (task_id, seed)))

    def step(self, action: str) -> Step:
        return self._alone(self.conversation("step", action))

    def _alone(self, conversation: Conversation):
        [outcome] = run_conversations([(self, conversation)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def conversation(self, kind: str, arg) -> Conversation:
        """A reset ((task id, seed)) or step (action) as a coroutine that yields each prompt of the user
        simulator and is sent its reply, so that `run_conversations` can answer many with one call."""
        return self._opening(*arg) if kind == "reset" else self._turn(arg)

    def _opening(self, task_id: str, seed: int) -> Conversation:
        name, _, local_id = task_id.partition("/")
        self.domain_name, self.task = name, domain(name).task(local_id)
        self.user = self.users[seed % len(self.users)]
        environment = domain(name).make_environment()
        agent_tools, user_tools = domain(name).tools
        self.agent = _Agent(tools=agent_tools, domain_policy=environment.get_policy())
        self.user_sim = _User(tools=user_tools, instructions=str(self.task.user_scenario))
        self.agent_tools, self.user_tools = domain(name).schemas
        self.orchestrator = Orchestrator(name, self.agent, self.user_sim, environment, self.task,
                                         max_steps=self.max_steps, max_errors=self.max_errors)  # fmt: skip
        self.started, self.turns = time.perf_counter(), 0
        self.goal = self.agent.system_prompt
        self.world_goal = world_model_context(name, self.agent.domain_policy if self.policy_in_world else None,
                                              self.agent_tools, self.task)  # fmt: skip
        self.orchestrator.initialize()
        yield from self._advance()
        self.ended_at_reset = self._ending() if self.orchestrator.done else None
        return self._observation(self.orchestrator.trajectory)

    def _turn(self, action: str) -> Conversation:
        orchestrator, start = self.orchestrator, len(self.orchestrator.trajectory)
        message = reply_message(action, "assistant", f"call-{self.turns}")
        self.turns += 1
        if message is None:  # nothing but thinking: upstream refuses an empty message; the agent is asked again
            return Step("(an empty reply: no message and no tool call)", 0.0, False, False, False, {"kind": "user"})
        self.agent.reply = message
        orchestrator.step()
        self._check_limits()
        yield from self._advance()
        news = orchestrator.trajectory[start + 1 :]
        failed = any(isinstance(m, ToolMessage) and m.error and m.requestor == "assistant" for m in news)
        observation, tool = self._observation(news), message.is_tool_call()
        info: dict = {
            "kind": "tool" if tool else "user",
            "target": world_model_target(observation, tool, orchestrator.done),
            "measure": "rouge" if tool else "embedding",  # docs/paper.md: structured tool replies score ROUGE-L
        }
        reward = 0.0
        if orchestrator.done:
            reward, final = self._score()
            info.update(final)
        return Step(observation, reward, orchestrator.done, reward == 1.0, not failed, info)

    def _advance(self) -> abc.Generator[Messages, str, None]:
        """Run the orchestrator until the agent is to speak or the conversation is over, asking our
        loop for each user turn."""
        orchestrator = self.orchestrator
        while not orchestrator.done and orchestrator.to_role != Role.AGENT:
            if orchestrator.to_role == Role.USER:
                reply = None
                for _ in range(USER_RETRIES):
                    prompt, ids = self._user_prompt(), f"user-{len(orchestrator.trajectory)}"
                    reply = reply_message((yield prompt), "user", ids, calls=self.user_tools is not None)
                    if reply is not None:
                        break
                if reply is None:
                    orchestrator.done, orchestrator.termination_reason = True, TerminationReason.USER_ERROR
                    return
                self.user_sim.reply = reply
            orchestrator.step()
            self._check_limits()

    def _check_limits(self) -> None:
        """Upstream's `Orchestrator.run` checks the step and error limits after each step, except while
        a message waits for the environment (its loop, without the optional stuck-agent judge)."""
        orchestrator = self.orchestrator
        if orchestrator.to_role == Role.ENV:
            return
        if orchestrator.step_count >= orchestrator.max_steps:
            orchestrator.done, orchestrator.termination_reason = True, TerminationReason.MAX_STEPS
        if orchestrator.num_errors >= orchestrator.max_errors:
            orchestrator.done, orchestrator.termination_reason = True, TerminationReason.TOO_MANY_ERRORS

    def _observation(self, messages: list) -> str:
        """What reached the agent, as one text for the records: the user's message, or the tool replies."""
        names = {c.id: c.name for m in self.orchestrator.trajectory if isinstance(m, AssistantMessage)
                 for c in m.tool_calls or ()}  # fmt: skip
        lines = []
        for m in messages:
            if isinstance(m, ToolMessage) and m.requestor == "assistant":
                lines.append(f"Tool ({names.get(m.id, '?')}): {m.content}")
            elif isinstance(m, UserMessage) and not m.is_tool_call():
                lines.append(f"User: {m.content}")
        return "\n".join(lines)

    def _ending(self) -> Step:
        reward, final = self._score()
        return Step("", reward, True, reward == 1.0, True, final)

    def end(self) -> dict:
        """Stop the conversation from outside (the rollout's cap on agent turns, which counts turns
        without a message too) as upstream's step limit stops one; its final outcome."""
        if not self.orchestrator.done:
            self.orchestrator.done, self.orchestrator.termination_reason = True, TerminationReason.MAX_STEPS
        return self._score()[1]

    def _score(self) -> tuple[float, dict]:
        """Upstream's evaluator on the conversation, as `run_task` calls it. Without a judge, NL
        assertions leave the reward basis (listed in `nl_unscored`) rather than failing the task."""
        orchestrator, task = self.orchestrator, self.task
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        simulation = SimulationRun(
            id=str(uuid.uuid4()), task_id=task.id, start_time=now, end_time=now,
            duration=time.perf_counter() - self.started, termination_reason=orchestrator.termination_reason,
            messages=orchestrator.get_trajectory(),
        )  # fmt: skip
        criteria = task.evaluation_criteria
        basis = list(criteria.reward_basis) if criteria else []
        unscored = []
        if criteria and RewardType.NL_ASSERTION in basis and not self.judged:
            unscored = list(criteria.nl_assertions or [])
            basis.remove(RewardType.NL_ASSERTION)
            task = task.model_copy(update={"evaluation_criteria": criteria.model_copy(update={"reward_basis": basis})})
        kind = EvaluationType.ALL_WITH_NL_ASSERTIONS if self.judged else EvaluationType.ALL
        result = evaluate_simulation(simulation, task, kind, solo_mode=False, domain=self.domain_name)
        return result.reward, {
            "ended": orchestrator.termination_reason.value,
            "reward_basis": [b.value for b in criteria.reward_basis] if criteria else [],  # the task's own
            "reward_breakdown": {str(k.value): v for k, v in (result.reward_breakdown or {}).items()},
            "nl_unscored": unscored,
            "user_simulator": getattr(self.user, "name", "the recipe's model"),
        }
