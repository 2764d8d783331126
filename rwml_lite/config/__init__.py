"""The recipe schema: every knob of a run, each with a one-line description.

A recipe is a YAML file validated by `Recipe`. Unknown keys and bad values are refused with a
message naming the key, the bad value and what is allowed, because a silently ignored typo in
a training recipe costs a GPU-day. `key.sub=value` overrides from the command line are applied
to the YAML before validation, so they are checked the same way.

The package, by what each module holds (config imports nothing of rwml_lite above it but
`rwml_lite.errors` and `rwml_lite.distributed.world`; pyproject.toml's import contracts check it):
  section.py   the base `Section`, the shared `Threshold` field type, `describe_fields`
  model.py     the `model` section (`ModelSettings`, `LoraSettings`, `ServerSettings`)
  envs.py      the `env` section: one settings model per environment, `ENVIRONMENTS`, the `EnvSettings` union
  training.py  the trained stages' sections: schedules, world model + filter, reward, grpo, wm_sft, policy
  recipe.py    `Recipe` and its cross-section checks; agent, collect, eval, study, run; `recipe_warnings`
  loader.py    YAML files and `extends`, overrides, validation errors as sentences, `get_dotted`

Public API (what the rest of rwml_lite, tests/ and bench/ import from `rwml_lite.config`): the
names in `__all__` below.
"""

from rwml_lite.config.envs import (
    ENVIRONMENTS,
    ALFWorldSettings,
    EnvSettings,
    Tau2Settings,
    TextWorldExpressSettings,
    UserEndpoint,
)
from rwml_lite.config.loader import (
    build_recipe,
    get_dotted,
    load_recipe,
    marked_lines,
    read_recipe_yaml,
    recipe_files,
)
from rwml_lite.config.model import LoraSettings, ModelSettings, ServerSettings
from rwml_lite.config.recipe import (
    NEEDS,
    STAGE_NAMES,
    VARIANTS,
    AgentSettings,
    CollectSettings,
    EvalSettings,
    Recipe,
    RunSettings,
    StudySettings,
    recipe_warnings,
)
from rwml_lite.config.section import Section, Threshold, describe_fields
from rwml_lite.config.training import (
    FilterSettings,
    GrpoSettings,
    OptimizerSchedule,
    PolicySettings,
    RewardSettings,
    SftSchedule,
    WmSftSettings,
    WorldModelSettings,
)

__all__ = [
    "ENVIRONMENTS",
    "NEEDS",
    "STAGE_NAMES",
    "VARIANTS",
    "ALFWorldSettings",
    "AgentSettings",
    "CollectSettings",
    "EnvSettings",
    "EvalSettings",
    "FilterSettings",
    "GrpoSettings",
    "LoraSettings",
    "ModelSettings",
    "OptimizerSchedule",
    "PolicySettings",
    "Recipe",
    "RewardSettings",
    "RunSettings",
    "Section",
    "ServerSettings",
    "SftSchedule",
    "StudySettings",
    "Tau2Settings",
    "TextWorldExpressSettings",
    "Threshold",
    "UserEndpoint",
    "WmSftSettings",
    "WorldModelSettings",
    "build_recipe",
    "describe_fields",
    "get_dotted",
    "load_recipe",
    "marked_lines",
    "read_recipe_yaml",
    "recipe_files",
    "recipe_warnings",
]
