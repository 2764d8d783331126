"""Scoring a tau2 episode as upstream does, without an LLM where none is needed.

DB: replay the task's reference actions on a fresh database (gold) and the episode's write calls on
another (predicted); equal canonical hashes score 1. COMMUNICATE: every `communicate_info` string
appears in some agent message (case-insensitive, commas ignored). The reward is the product over the
task's `reward_basis` (default DB and COMMUNICATE), and 0 when the episode ended by a step or error
limit. NL assertions need an LLM judge: without one they are left out of the product and the score
says so (`nl_unscored`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rwml_lite.envs.tau2.data import Domain
from rwml_lite.envs.tau2.toolkit import WRITE

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
        gold = domain.fresh_tools()
        for action in task["evaluation_criteria"].get("actions") or []:
            gold.call(action["name"], action["arguments"])  # a failing reference step changes nothing, as upstream
        _GOLD[key] = gold.db_hash()
    return _GOLD[key]


def _plain(text: str) -> str:
    return text.lower().replace(",", "")


def score(domain: Domain, task: dict, calls: list[dict], agent_messages: list[str], ended_normally: bool = True) -> Score:
    """calls: the episode's tool calls in order, each {"name", "arguments"}; agent_messages: its texts to the user."""
    criteria = task["evaluation_criteria"]
    basis = criteria.get("reward_basis") or DEFAULT_BASIS
    parts: dict[str, float] = {}
    if "DB" in basis:
        predicted = domain.fresh_tools()
        kinds = predicted.tool_names()
        for call in calls:
            if kinds.get(call["name"]) == WRITE:
                predicted.call(call["name"], call["arguments"])
        parts["DB"] = float(gold_hash(domain, task) == predicted.db_hash())
    if "COMMUNICATE" in basis:
        said = [_plain(m) for m in agent_messages]
        parts["COMMUNICATE"] = float(all(any(_plain(info) in m for m in said) for info in criteria.get("communicate_info") or []))
    nl_unscored = "NL_ASSERTION" in basis and bool(criteria.get("nl_assertions"))
    reward = 0.0 if not ended_normally else float(all(v == 1.0 for v in parts.values()))
    return Score(reward, parts, nl_unscored)
