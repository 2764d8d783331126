"""One definition per tool: a method with typed arguments and a docstring becomes both the callable
and its function-calling schema, so the two cannot drift apart.

A domain's toolkit holds its database as plain JSON data. Tools raise `ToolError` for anything the
caller got wrong (unknown id, bad status, insufficient balance); `call` turns that, and malformed
calls (unknown tool, missing or unexpected argument), into an error tool message and leaves the
database untouched, because tools validate everything before they write.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rwml_lite.errors import RwmlError

READ, WRITE, GENERIC = "read", "write", "generic"


class ToolError(Exception):
    """A tool call the environment refuses; its message goes back to the agent."""


def tool(kind: str) -> Callable:
    """Mark a toolkit method as a tool: READ leaves the database alone, WRITE may change it."""

    def mark(method: Callable) -> Callable:
        method.tool_kind = kind
        return method

    return mark


def setup(method: Callable) -> Callable:
    """Mark a method that only a task's `initial_state` may call (it breaks something on purpose)."""
    method.is_setup = True
    return method


def assertion(method: Callable) -> Callable:
    """Mark a check of the final state that a task's `env_assertions` name; it returns a bool."""
    method.is_assertion = True
    return method


@dataclass(frozen=True)
class Reply:
    """A tool's answer as the agent sees it, and whether the call was valid."""

    content: str
    ok: bool


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def _schema_of(annotation) -> dict:
    origin = typing.get_origin(annotation)
    if origin is list:
        (item,) = typing.get_args(annotation) or (str,)
        return {"type": "array", "items": _schema_of(item)}
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return _schema_of(next(a for a in typing.get_args(annotation) if a is not type(None)))
    return {"type": _JSON_TYPES.get(origin or annotation, "object")}


class Toolkit:
    """Base of a domain's tools over `self.db` (JSON data)."""

    def __init__(self, db: dict):
        self.db = db

    @classmethod
    def tool_names(cls) -> dict[str, str]:
        """tool name -> kind, in definition order."""
        return {name: fn.tool_kind for name, fn in vars_in_order(cls) if hasattr(fn, "tool_kind")}

    @classmethod
    def schemas(cls) -> list[dict]:
        """OpenAI-style function schemas: name, description (the docstring's first paragraph), typed parameters."""
        out = []
        for name, fn in vars_in_order(cls):
            if not hasattr(fn, "tool_kind"):
                continue
            hints = typing.get_type_hints(fn)
            params = list(inspect.signature(fn).parameters.values())[1:]
            properties = {p.name: _schema_of(hints[p.name]) for p in params}
            required = [p.name for p in params if p.default is inspect.Parameter.empty]
            description = inspect.getdoc(fn).split("\n\n")[0].replace("\n", " ")
            out.append(
                {
                    "name": name,
                    "description": description,
                    "parameters": {"type": "object", "properties": properties, "required": required},
                }
            )
        return out

    def call(self, name: str, arguments: Any) -> Reply:
        """Run one tool call; every problem comes back as an error reply, never as an exception."""
        kinds = self.tool_names()
        if name not in kinds:
            return Reply(f"Error: unknown tool '{name}'. Available tools: {', '.join(kinds)}.", False)
        if not isinstance(arguments, dict):
            return Reply(f"Error: the arguments of {name} must be a JSON object.", False)
        params = list(inspect.signature(getattr(type(self), name)).parameters.values())[1:]
        missing = [p.name for p in params if p.default is inspect.Parameter.empty and p.name not in arguments]
        unexpected = sorted(set(arguments) - {p.name for p in params})
        if missing or unexpected:
            problems = ([f"missing argument(s) {', '.join(missing)}"] if missing else []) + (
                [f"unexpected argument(s) {', '.join(unexpected)}"] if unexpected else []
            )
            return Reply(f"Error: {name}: {'; '.join(problems)}.", False)
        try:
            result = getattr(self, name)(**arguments)
        except ToolError as e:
            return Reply(f"Error: {e}", False)
        except (TypeError, ValueError, KeyError, AttributeError) as e:  # arguments of the wrong shape
            return Reply(f"Error: {name}: invalid arguments ({type(e).__name__}: {e}).", False)
        return Reply(result if isinstance(result, str) else json.dumps(result), True)

    def perform(self, name: str, arguments: dict) -> None:
        """Run a task's set-up action (a setup method or a tool); a broken task file is an error, not a reply."""
        method = getattr(type(self), name, None)
        if not (getattr(method, "is_setup", False) or hasattr(method, "tool_kind")):
            raise RwmlError(f"the task's initial_state names {name!r}, which {type(self).__name__} does not know")
        try:
            getattr(self, name)(**arguments)
        except (ToolError, TypeError, KeyError) as e:
            raise RwmlError(f"the task's initial_state action {name}({arguments}) failed: {e}") from None

    def holds(self, name: str, arguments: dict) -> bool:
        """Evaluate one of a task's environment assertions on the current state."""
        method = getattr(type(self), name, None)
        if not getattr(method, "is_assertion", False):
            raise RwmlError(f"the task's env_assertions name {name!r}, which {type(self).__name__} does not know")
        return bool(getattr(self, name)(**arguments))

    def side(self, requestor: str) -> Toolkit:
        """The toolkit that acts for `requestor`: the agent's, unless a domain gives the user tools too."""
        return self

    def db_hash(self) -> str:
        """SHA-256 of the database as canonical JSON (sorted keys): equal states, equal hashes."""
        return hashlib.sha256(json.dumps(self.db, sort_keys=True).encode()).hexdigest()


def vars_in_order(cls) -> list[tuple[str, Any]]:
    """Class attributes of cls and its bases, base first, in definition order."""
    seen: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        seen.update(vars(klass))
    return list(seen.items())


def money(x: float) -> float:
    """Amounts in cents precision, as the databases store them."""
    return round(x + 0.0, 2)


class ServiceTools(Toolkit):
    """What every customer-service domain shares: its users, and the generic tools."""

    def _user(self, user_id: str) -> dict:
        if user_id not in self.db["users"]:
            raise ToolError(f"user {user_id} not found")
        return self.db["users"][user_id]

    @tool(GENERIC)
    def calculate(self, expression: str) -> str:
        """Calculate the result of an arithmetic expression (numbers, + - * /, parentheses), rounded to 2 decimals.

        expression: e.g. "2 * (350 - 122)".
        """
        import ast
        import operator

        ops = {
            ast.Add: operator.add,
            ast.Sub: operator.sub,
            ast.Mult: operator.mul,
            ast.Div: operator.truediv,
            ast.USub: operator.neg,
            ast.UAdd: operator.pos,
        }

        def value(node):
            if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
                return node.value
            if isinstance(node, ast.BinOp) and type(node.op) in ops:
                return ops[type(node.op)](value(node.left), value(node.right))
            if isinstance(node, ast.UnaryOp) and type(node.op) in ops:
                return ops[type(node.op)](value(node.operand))
            raise ToolError(f"calculate only takes numbers, + - * / and parentheses, not {expression!r}")

        try:
            result = value(ast.parse(expression, mode="eval").body)
        except SyntaxError:
            raise ToolError(f"{expression!r} is not an arithmetic expression") from None
        except ZeroDivisionError:
            raise ToolError("division by zero") from None
        return str(round(result, 2))

    @tool(GENERIC)
    def transfer_to_human_agents(self, summary: str) -> str:
        """Transfer the user to a human agent, with a summary of their issue. Only when the request cannot be handled with the other tools.

        summary: what the user wants and why it could not be done.
        """
        return "Transfer successful"
