"""Every prompt text of the method in one place, so a user can read and change them together.

Three texts, following docs/paper.md: the agent prompt (task, recent history, current observation,
admissible actions; think, then `<action>`), the RWML prompt (the same history plus a potential
action; think, then predict the next observation inside `<next_state>`), and the WM-SFT target
(empty think + the real next observation), used for the filter model and the WM-SFT baseline.
"""

from __future__ import annotations

import re

Messages = list[dict]
#: Where a prompt carries its chat-template options (tools, enable_thinking): on its first message, so
#: that they travel with it through records and every backend; vLLM's server takes the same name.
TEMPLATE_ARGS = "chat_template_kwargs"

_ACTION = re.compile(r"<action>(.*?)</action>", re.S | re.I)
_NEXT_STATE = re.compile(r"<next_state>(.*?)</next_state>", re.S | re.I)
_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_NUMBER = re.compile(r"\d+")


def with_template_args(messages: Messages, **kwargs) -> Messages:
    """`messages` with chat-template options (e.g. tools=[...], enable_thinking=False); None values left out."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return [{**messages[0], TEMPLATE_ARGS: kwargs}, *messages[1:]] if kwargs else messages


def template_args(messages: Messages) -> tuple[Messages, dict]:
    """The plain messages and the chat-template options they carry."""
    if not messages or TEMPLATE_ARGS not in messages[0]:
        return messages, {}
    first = dict(messages[0])
    kwargs = first.pop(TEMPLATE_ARGS)
    return [first, *messages[1:]], kwargs


def _history_text(history: list[tuple[str, str]], window: int) -> str:
    shown = history[-window:] if window else []
    if not shown:
        return ""
    turns = "\n".join(f"Observation: {obs}\nAction: {act}" for obs, act in shown)
    return f"Recent history (oldest first):\n{turns}\n\n"


def agent_messages(
    role: str,
    goal: str,
    history: list[tuple[str, str]],
    observation: str,
    admissible: list[str] | None,
    window: int,
    numbered: bool = False,
) -> Messages:
    """The agent's turn. `numbered` (agent.action_parse: choice) lists the admissible actions as
    numbered choices and asks for a number: what a tiny model can answer."""
    if numbered and admissible:
        listed = "\n".join(f"{i}. {a}" for i, a in enumerate(admissible, 1))
        ask = f"Admissible actions:\n{listed}\n\nAnswer with the number of one admissible action."
    else:
        actions = f"Admissible actions: {', '.join(admissible)}\n\n" if admissible else ""
        which = "admissible action" if admissible else "action"
        ask = f"{actions}Think briefly inside <think>...</think>, then give exactly one {which} inside <action>...</action>."
    user = f"Task: {goal}\n\n{_history_text(history, window)}Current observation: {observation}\n\n{ask}"
    return [{"role": "system", "content": role}, {"role": "user", "content": user}]


#: The closing instruction of the RWML prompt (docs/paper.md, Table A4): reason about what has been learned of
#: the environment, then predict.
RWML_INSTRUCTION = (
    "Predict what the environment will show after this action. Reason briefly inside <think>...</think>: "
    "summarise what you have learned about the environment that matters for the task. Then write the "
    "immediate next observation inside <next_state>...</next_state>, imitating the style of the past observations."
)
#: The WM SFT baseline's instruction (Tables A5/A7): the same context, the prediction only.
WM_SFT_INSTRUCTION = (
    "Predict what the environment will show after this action. Do not explain: write only the immediate "
    "next observation inside <next_state>...</next_state>, imitating the style of the past observations."
)


def rwml_messages(
    role: str, goal: str, history: list[tuple[str, str]], observation: str, action: str, window: int
) -> Messages:
    user = (
        f"Task: {goal}\n\n{_history_text(history, window)}Current observation: {observation}\n\n"
        f"Potential action: {action}\n\n{RWML_INSTRUCTION}"
    )
    return [{"role": "system", "content": role}, {"role": "user", "content": user}]


def wm_sft_messages(rwml_prompt: Messages) -> Messages:
    """A triplet's RWML prompt with the WM SFT instruction in place of the RWML one."""
    *head, last = rwml_prompt
    if not last["content"].endswith(RWML_INSTRUCTION):
        raise ValueError("not an RWML prompt: its last message does not end with RWML_INSTRUCTION")
    return [*head, {**last, "content": last["content"].removesuffix(RWML_INSTRUCTION) + WM_SFT_INSTRUCTION}]


def wm_sft_target(next_observation: str) -> str:
    """The WM-SFT completion: an empty think, then the real next observation."""
    return f"<think> </think><next_state>{next_observation}</next_state>"


def parse_action(completion: str, admissible: list[str] | None, mode: str = "tag") -> str | None:
    """The action inside the last `<action>` tag, matched case- and space-insensitively to an
    admissible one when the environment lists them; None if there is no tag. With
    `mode="mention"`, a reply without the tag yields the admissible action it names first; with
    `mode="choice"`, the first number of the reply (or of its tag) picks that admissible action,
    and a reply without a number falls back to the action it names."""
    found = _ACTION.findall(completion)
    if mode == "choice" and admissible:
        number = _NUMBER.search(found[-1] if found else completion)
        if number:
            index = int(number.group())
            return admissible[index - 1] if 1 <= index <= len(admissible) else None
        return _first_mentioned(completion, admissible)
    if not found:
        return _first_mentioned(completion, admissible) if mode == "mention" else None
    action = " ".join(found[-1].split())
    for candidate in admissible or ():
        if candidate.lower() == action.lower():
            return candidate
    return action


def without_thinking(text: str) -> str:
    """A reply after its reasoning: what follows the last `</think>` (Qwen3's template reads a reply so,
    with or without the opening tag), with any unclosed `<think>` part dropped."""
    return _THINK.sub("", text.rsplit("</think>", 1)[-1])


def whole_reply(completion: str) -> str | None:
    """The action of an agent whose environment reads the whole reply (tau2: a message or tool calls):
    the reply without its reasoning, or None when nothing else is in it."""
    return without_thinking(completion).strip() or None


def _first_mentioned(completion: str, admissible: list[str] | None) -> str | None:
    text = " ".join(completion.lower().split())
    positions = [(text.find(a.lower()), -len(a), a) for a in admissible or () if a.lower() in text]
    return min(positions)[2] if positions else None


def closed_at_end(completion: str) -> str:
    """The completion with its last `<next_state>` tag closed at the end when it was left open."""
    opened, closed = completion.lower().rfind("<next_state>"), completion.lower().rfind("</next_state>")
    return completion + "</next_state>" if opened > closed else completion


def extract_next_state(completion: str) -> str | None:
    """The text inside the last `<next_state>` tag, or None when the tag is missing."""
    found = _NEXT_STATE.findall(completion)
    return found[-1].strip() if found else None
