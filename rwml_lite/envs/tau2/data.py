"""Where the tau2 data lives and what a domain is made of: its database, tasks, splits and policy.

Data come from `$TAU2_DATA_DIR/tau2/` (a tau2-bench clone's `data/` folder). The database is read
once per process as JSON text and parsed afresh for every environment, which is faster than
deep-copying the parsed 7 MB airline database; telecom's two TOML files (the carrier's records and
the user's phone) become one JSON world first. A task's `initial_state` actions run on the fresh copy.
"""

from __future__ import annotations

import functools
import json
import os
import tomllib
from pathlib import Path

from rwml_lite.envs.tau2.airline import AirlineTools
from rwml_lite.envs.tau2.retail import RetailTools
from rwml_lite.envs.tau2.telecom import TelecomTools, world
from rwml_lite.envs.tau2.toolkit import Toolkit
from rwml_lite.errors import RwmlError

TOOLKITS: dict[str, type[Toolkit]] = {"airline": AirlineTools, "retail": RetailTools, "telecom": TelecomTools}
POLICY_FILES = {"telecom": ("main_policy.md", "tech_support_manual.md")}  # others: policy.md


def data_root() -> Path:
    """$TAU2_DATA_DIR/tau2, checked, with the fix in the error when it is missing."""
    base = os.environ.get("TAU2_DATA_DIR")
    root = Path(base) / "tau2" if base else None
    if root is None or not (root / "domains").is_dir():
        where = f"TAU2_DATA_DIR={base} has no tau2/domains/" if base else "TAU2_DATA_DIR is not set"
        raise RwmlError(
            f"The tau2 data was not found: {where}. Clone https://github.com/sierra-research/tau2-bench and "
            f"export TAU2_DATA_DIR=<clone>/data (the folder that holds tau2/domains/)."
        )
    return root


class Domain:
    """One tau2 domain's files; `fresh_tools()` gives a toolkit over a pristine copy of its database."""

    def __init__(self, name: str):
        if name not in TOOLKITS:
            raise RwmlError(f"tau2 domain {name!r} is not available; choose from {', '.join(TOOLKITS)}.")
        self.name, self.folder = name, data_root() / "domains" / name
        if name == "telecom":
            toml = {f: tomllib.loads((self.folder / f).read_text()) for f in ("db.toml", "user_db.toml")}
            self._db_text = json.dumps(world(toml["db.toml"], toml["user_db.toml"]))
        else:
            self._db_text = (self.folder / "db.json").read_text()
        self.tasks = {t["id"]: t for t in json.loads((self.folder / "tasks.json").read_text())}
        self.splits = json.loads((self.folder / "split_tasks.json").read_text())
        self.policy = "\n\n".join((self.folder / f).read_text() for f in POLICY_FILES.get(name, ("policy.md",)))

    def fresh_tools(self, task: dict | None = None) -> Toolkit:
        """The domain's toolkit over a pristine database, set up as `task`'s initial_state says."""
        tools = TOOLKITS[self.name](json.loads(self._db_text))
        for action in ((task or {}).get("initial_state") or {}).get("initialization_actions") or []:
            tools.side(action["env_type"]).perform(action["func_name"], action["arguments"])
        return tools

    def task_ids(self, split: str) -> list[str]:
        if split not in self.splits:
            raise RwmlError(f"tau2 {self.name} has no split {split!r}; its splits: {', '.join(self.splits)}.")
        return list(self.splits[split])


@functools.cache
def domain(name: str) -> Domain:
    return Domain(name)
