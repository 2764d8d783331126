"""World-model targets for tau2 tool replies: JSON values replaced by their types.

The paper asks the model to predict the structure of a tool's answer, not the database's contents
it cannot know: `{"user_id": "mia_li_3668", "reservations": ["NO6JO3"]}` becomes
`{"user_id": "string", "reservations": ["string"]}`. Keys, nesting and list lengths stay; every
value goes. Replies that are not JSON (errors, "Transfer successful") stay as they are.
"""

from __future__ import annotations

import json


def _types(value):
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if value is None:
        return "null"
    return "string"


def mask_tool_output(content: str) -> str:
    """The reply with every JSON value replaced by its type name; non-JSON text unchanged."""
    try:
        parsed = json.loads(content)
    except (json.JSONDecodeError, TypeError):
        return content
    if not isinstance(parsed, (dict, list)):
        return content  # a bare number or string is an answer, not a structure
    return json.dumps(_types(parsed))


def mask_tool_observation(observation: str) -> str:
    """An episode's tool observation ("Tool (name): reply" per call) with each reply masked."""
    lines = []
    for line in observation.split("\n"):
        head, sep, reply = line.partition("): ")
        lines.append(head + sep + mask_tool_output(reply) if line.startswith("Tool (") and sep else line)
    return "\n".join(lines)
