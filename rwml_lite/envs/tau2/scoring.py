"""Scoring a tau2 episode as upstream does, without an LLM where none is needed.

DB: replay the task's reference actions on a fresh database (gold) and the episode's write calls on
another (predicted); equal canonical hashes score 1. COMMUNICATE: every `communicate_info` string
appears in some agent message (case-insensitive, commas ignored). ENV_ASSERTION (telecom): the
task's assertions hold on the predicted final state, both sides' writes replayed in order on the
task's initial state. ACTION: each reference action appears among the episode's calls, by the same
side, with equal values for the arguments it compares. The reward is the product over the task's
`reward_basis` (default DB and COMMUNICATE), and 0 when the episode ended by a step or error limit.
NL assertions need an LLM judge (judge.py): its verdicts make the NL_ASSERTION part; without them
the assertions are left out of the product and the score says so (`nl_unscored`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rwml_lite.envs.tau2.data import Domain
from rwml_lite.envs.tau2.toolkit import WRITE, Toolkit

DEFAULT_BASIS = ["DB", "COMMUNICATE"]


@dataclass
class Score:
    reward: float
    parts: dict[str, float] = field(default_factory=dict)  # basis -> 0/1, for the bases that were scored
    nl_unscored: bool = False  # the task has NL assertions and no judge scored them


_GOLD: dict[tuple[str, str], str] = {}


def gold_hash(domain: Domain, task: dict) -> str:
    """Hash of the database after the task's reference actions (computed once per task)."""
    key = (domain.name, task["id"])
    if key not in _GOLD:
        gold = domain.fresh_tools(task)
        replay(
            gold, task["evaluation_criteria"].get("actions") or []
        )  # a failing reference step changes nothing, as upstream
        _GOLD[key] = gold.db_hash()
    return _GOLD[key]


def replay(tools: Toolkit, calls: list[dict]) -> None:
    """Run the write calls in order, each on the side that made it (the agent's unless `requestor` is "user")."""
    for call in calls:
        side = tools.side(call.get("requestor") or "assistant")
        if side.tool_names().get(call["name"]) == WRITE:
            side.call(call["name"], call["arguments"])


def _matches(reference: dict, call: dict) -> bool:
    """Same tool, same side, and equal values for the arguments the reference compares (all by default)."""
    if (reference["name"], reference.get("requestor") or "assistant") != (
        call["name"],
        call.get("requestor") or "assistant",
    ):
        return False
    keys = reference.get("compare_args")
    args = call["arguments"] if isinstance(call["arguments"], dict) else {}
    return all(args.get(k) == reference["arguments"].get(k) for k in (reference["arguments"] if keys is None else keys))


def _plain(text: str) -> str:
    return text.lower().replace(",", "")


def score(domain: Domain, task: dict, calls: list[dict], agent_messages: list[str], ended_normally: bool = True,
          nl_verdicts: list[bool] | None = None) -> Score:  # fmt: skip
    """calls: the episode's tool calls in order, each {"name", "arguments"} and, for the user's own
    tools, "requestor": "user"; agent_messages: the agent's texts to the user; nl_verdicts: a judge's
    verdict per NL assertion, or None when no judge ran."""
    criteria = task["evaluation_criteria"]
    basis = criteria.get("reward_basis") or DEFAULT_BASIS
    parts: dict[str, float] = {}
    if "DB" in basis or "ENV_ASSERTION" in basis:
        predicted = domain.fresh_tools(task)
        replay(predicted, calls)
    if "DB" in basis:
        parts["DB"] = float(gold_hash(domain, task) == predicted.db_hash())
    if "ENV_ASSERTION" in basis:
        checks = criteria.get("env_assertions") or []
        parts["ENV_ASSERTION"] = float(
            all(
                predicted.side(a["env_type"]).holds(a["func_name"], a["arguments"]) == a.get("assert_value", True)
                for a in checks
            )
        )
    if "ACTION" in basis:
        parts["ACTION"] = float(
            all(any(_matches(ref, call) for call in calls) for ref in criteria.get("actions") or [])
        )
    if "COMMUNICATE" in basis:
        said = [_plain(m) for m in agent_messages]
        parts["COMMUNICATE"] = float(
            all(any(_plain(info) in m for m in said) for info in criteria.get("communicate_info") or [])
        )
    judged = "NL_ASSERTION" in basis and bool(criteria.get("nl_assertions"))
    if judged and nl_verdicts is not None:
        parts["NL_ASSERTION"] = float(all(nl_verdicts))
    nl_unscored = judged and nl_verdicts is None
    reward = 0.0 if not ended_normally else float(all(v == 1.0 for v in parts.values()))
    return Score(reward, parts, nl_unscored)
