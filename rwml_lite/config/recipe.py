"""The whole recipe: `Recipe` holds every section and checks what spans sections (the stages and what they read,
splits, processes); the small sections of acting, evaluating and the run folder; and `recipe_warnings`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rwml_lite.config.envs import EnvSettings, TextWorldExpressSettings
from rwml_lite.config.model import ModelSettings
from rwml_lite.config.section import Section
from rwml_lite.config.training import (
    GrpoSettings,
    PolicySettings,
    RewardSettings,
    WmSftSettings,
    WorldModelSettings,
)
from rwml_lite.distributed import world


class AgentSettings(Section):
    history: int = Field(
        5,
        ge=0,
        description="Past (observation, action) pairs shown in the agent prompt (tau2's prompt is upstream's: "
        "the whole conversation).",
    )
    max_new_tokens: int = Field(256, gt=0, description="Token budget of one agent turn (think + action).")
    action_parse: Literal["tag", "mention", "choice"] = Field(
        "tag",
        description="tag = the action inside <action>...</action> (the paper's); mention = also accept the first "
        "admissible action named anywhere in a reply without the tag; choice = the prompt numbers the admissible "
        "actions and the reply's first number picks one (tiny models). tau2 reads the whole reply after its reasoning "
        "(a message or tool calls, upstream's format) and ignores this field.",
    )
    parallel_episodes: int = Field(
        16, gt=0, description="Episodes played at once; their turns share one generate call."
    )


class CollectSettings(Section):
    split: str = Field("train", description="Split whose tasks are played.")
    num_tasks: int = Field(8, gt=0, description="Number of tasks (games) to play, the first of the split.")
    rollouts_per_task: int = Field(3, gt=0, description="Episodes per task (the paper uses 3).")
    max_steps: int = Field(
        30,
        gt=0,
        description="Step limit per episode (the paper uses 30); tau2 counts every message (agent, user, tool) "
        "as upstream's orchestrator does (its default: 100).",
    )
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the agent (0 = greedy).")


class EvalSettings(Section):
    policies: list[Literal["base", "rwml", "wm_sft", "policy"]] | None = Field(
        None,
        description="Policies evaluated: base and the adapters of these stages (null = base and every trained stage "
        "of `stages`).",
    )
    splits: list[str] = Field(
        ["test"], min_length=1, description="Splits evaluated (ALFWorld: valid_seen = ID, valid_unseen = OOD)."
    )
    num_tasks: int | None = Field(20, gt=0, description="Evaluation tasks per split, the first of each (null = all).")
    runs: int = Field(3, gt=0, description="R: evaluation runs; success is reported as mean +- std over them.")
    max_steps: int = Field(30, gt=0, description="Step limit per evaluation episode.")
    temperature: float = Field(0.0, ge=0.0, description="Agent temperature at evaluation (0 = greedy).")
    wm_samples: int = Field(1, gt=0, description="Predictions per validation triplet for the world-model score.")
    wm_temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of world-model score predictions.")

    @model_validator(mode="after")
    def _sampled(self) -> EvalSettings:
        if self.wm_samples > 1 and self.wm_temperature == 0:
            raise ValueError(
                "wm_samples > 1 needs wm_temperature > 0: greedy decoding gives the same prediction every time"
            )
        return self


#: The variants `rwml-lite study` can run (docs/paper.md Table 1, then Table 4's ablations).
VARIANTS = (
    "base", "wm_sft", "rwml", "policy", "wm_sft+policy", "rwml+policy",
    "rwml_no_filter", "rwml_judge_binary", "rwml_judge_continuous", "rwml_continuous",
)  # fmt: skip


class StudySettings(Section):
    variants: list[Literal[VARIANTS]] = Field(
        ["base", "wm_sft", "rwml", "policy", "wm_sft+policy", "rwml+policy"],
        min_length=1,
        description="Variants `rwml-lite study` trains and evaluates: the paper's Table 1 rows by default; ablations "
        "rwml_no_filter, rwml_judge_binary, rwml_judge_continuous (need reward.judge_endpoint), rwml_continuous.",
    )


class RunSettings(Section):
    dir: str = Field("runs/default", description="Run folder: every artifact, manifest and checkpoint goes here.")
    report_to: Literal["tensorboard", "wandb", "none"] = Field(
        "tensorboard", description="Where training metrics are logged (also always to metrics/*.jsonl)."
    )


#: Every stage `train` can run, in pipeline order.
STAGE_NAMES = ("collect", "build", "filter", "rwml", "wm_sft", "policy", "eval")
#: stage -> the stages whose artifacts it reads (policy also reads the stage named by policy.start)
NEEDS = {"build": ("collect",), "filter": ("build",), "rwml": ("filter",), "wm_sft": ("filter",),
         "policy": ("build",), "eval": ("build",)}  # fmt: skip


class Recipe(Section):
    seed: int = Field(0, description="Seed of task order, splits, subsampling and sampling.")
    stages: list[Literal[STAGE_NAMES]] = Field(
        ["collect", "build", "filter", "rwml", "eval"],
        min_length=1,
        description="Stages `train` runs, in pipeline order: collect, build, filter, rwml, wm_sft (the WM SFT "
        "baseline), policy (task-success RL from policy.start), eval.",
    )
    run: RunSettings = Field(default_factory=RunSettings, description="Run folder and logging.")
    model: ModelSettings = Field(description="The policy model.")
    env: EnvSettings = Field(default_factory=TextWorldExpressSettings, description="The environment.")
    agent: AgentSettings = Field(default_factory=AgentSettings, description="How the policy acts (collect and eval).")
    collect: CollectSettings = Field(default_factory=CollectSettings, description="Rollout collection.")
    worldmodel: WorldModelSettings = Field(default_factory=WorldModelSettings, description="Triplets and filter.")
    reward: RewardSettings = Field(default_factory=RewardSettings, description="Sim-to-real reward.")
    grpo: GrpoSettings = Field(default_factory=GrpoSettings, description="RWML training with GRPO.")
    wm_sft: WmSftSettings = Field(default_factory=WmSftSettings, description="The WM SFT baseline.")
    policy: PolicySettings = Field(default_factory=PolicySettings, description="Task-success RL (Policy RL).")
    eval: EvalSettings = Field(default_factory=EvalSettings, description="Evaluation.")
    study: StudySettings = Field(default_factory=StudySettings, description="What `rwml-lite study` compares.")

    @model_validator(mode="after")
    def _stages_in_order(self) -> Recipe:
        order = [s for s in STAGE_NAMES if s in self.stages]
        if self.stages != order:
            raise ValueError(f"`stages` = {self.stages} must list each stage once, in pipeline order: {order}")
        for stage in self.stages:
            needed = NEEDS.get(stage, ()) + (
                (self.policy.start,) if stage == "policy" and self.policy.start != "base" else ()
            )
            missing = [n for n in needed if n not in self.stages]
            if missing:
                why = f" (policy.start={self.policy.start})" if stage == "policy" else ""
                raise ValueError(
                    f"`stages` runs {stage}{why} but not {', '.join(missing)}, whose artifacts it reads; add "
                    f"{', '.join(missing)} to `stages`"
                )
        measured = [s for s in ("rwml", "eval") if s in self.stages]
        if self.reward.tau_d == "auto" and measured and "filter" not in self.stages:
            raise ValueError(
                f"reward.tau_d is auto, measured by the filter stage, and `stages` runs {', '.join(measured)} but not "
                "filter; add filter to `stages`, or set reward.tau_d to a number"
            )
        for name in self.eval.policies or ():
            if name != "base" and name not in self.stages:
                raise ValueError(
                    f"`eval.policies` names {name!r}, a stage that `stages` does not run; add it or drop it"
                )
        return self

    @model_validator(mode="after")
    def _splits_over_the_processes(self) -> Recipe:
        """Under `accelerate launch` a batch size stays what one optimizer step sees, whatever the
        number of processes, and is split among them; Unsloth's shared-weight path runs in one."""
        n = world()
        if n == 1:
            return self
        if self.model.backend == "unsloth":
            raise ValueError(
                f"model.backend=unsloth runs in one process, and this is one of {n} (accelerate launch): Unsloth's "
                "vLLM engine shares the trainer's weights, which data parallelism upstream does not support. Set "
                "model.backend=hf for several GPUs, or run `rwml-lite train` without accelerate on one GPU"
            )
        g = self.grpo
        if "rwml" in self.stages and (g.batch_size * g.group_size) % (g.micro_batch_size * n):
            raise ValueError(
                f"grpo.micro_batch_size={g.micro_batch_size} on each of {n} processes must divide grpo.batch_size * "
                f"grpo.group_size = {g.batch_size * g.group_size}, the completions of one optimizer step; pick a "
                f"micro batch that does, or another number of processes"
            )
        f = self.worldmodel.filter
        sft = [
            ("worldmodel.filter", f, "filter" in self.stages and f.enabled),
            ("wm_sft", self.wm_sft, "wm_sft" in self.stages),
        ]
        for section, settings, runs in sft:
            share = n * (settings.micro_batch_size or 1)  # each process takes an equal share of each batch
            if runs and settings.batch_size % share:
                raise ValueError(
                    f"{section}.batch_size={settings.batch_size} must be a multiple of the {n} processes x "
                    f"{section}.micro_batch_size={settings.micro_batch_size or 1}, which take an equal share of each "
                    f"batch; set {section}.batch_size={share * -(-settings.batch_size // share)}"
                )
        return self

    @model_validator(mode="after")
    def _choice_needs_a_list(self) -> Recipe:
        if self.agent.action_parse == "choice" and not self.env.LISTS_ACTIONS:
            raise ValueError(
                f"`agent.action_parse` = 'choice' numbers the admissible actions, and {self.env.name} lists none (its "
                f"agent answers in the benchmark's own format); leave agent.action_parse out of a {self.env.name} recipe"
            )
        return self

    @model_validator(mode="after")
    def _judged_variants_have_a_judge(self) -> Recipe:
        judged = [v for v in self.study.variants if "judge" in v]
        if judged and not self.reward.judge_endpoint:
            raise ValueError(
                f"`study.variants` asks for {', '.join(judged)}, which need reward.judge_endpoint (an OpenAI-compatible "
                f"server that plays the judge)"
            )
        return self

    def evaluated_policies(self) -> list[str]:
        """eval.policies, or base and every trained stage of `stages`."""
        if self.eval.policies is not None:
            return list(self.eval.policies)
        return ["base"] + [s for s in ("rwml", "wm_sft", "policy") if s in self.stages]

    @model_validator(mode="after")
    def _splits_exist(self) -> Recipe:
        allowed = self.env.SPLITS
        chosen = [("collect.split", self.collect.split), ("policy.split", self.policy.split)]
        for field, split in chosen + [("eval.splits", s) for s in self.eval.splits]:
            if split not in allowed:
                raise ValueError(
                    f"`{field}` = {split!r} is not a split of {self.env.name}; allowed values: {', '.join(allowed)}"
                )
        return self


def recipe_warnings(recipe: Recipe) -> list[str]:
    """Values the schema accepts that are very likely not what the user wants (the CLI prints them)."""
    warnings = []
    reward, f = recipe.reward, recipe.worldmodel.filter
    if reward.kind == "binary" and reward.tau_d != "auto" and reward.tau_d > 0.5:
        warnings.append(
            f"reward.tau_d={reward.tau_d} rewards predictions far from the real observation (the paper uses 0.2 on "
            f"ALFWorld, 0.4 on tau2; looser thresholds teach generic predictions)."
        )
    if f.enabled and f.tau_d != "auto" and f.tau_d > 0.5:
        warnings.append(
            f"worldmodel.filter.tau_d={f.tau_d} calls almost every triplet easy (the paper's strict threshold is 0.1)."
        )
    if f.enabled and reward.kind == "binary" and "auto" not in (f.tau_d, reward.tau_d) and f.tau_d > reward.tau_d:
        warnings.append(
            f"worldmodel.filter.tau_d={f.tau_d} is looser than reward.tau_d={reward.tau_d}: the filter is meant to be "
            f"stricter than the training reward, so that only triplets already solved exactly are subsampled."
        )
    for embedder, pair in recipe.env.PAPER_THRESHOLDS.items():
        fixed = [(field, value) for field, value in (("worldmodel.filter.tau_d", f.tau_d), ("reward.tau_d", reward.tau_d))
                 if pair and value in pair and value != "auto"]  # fmt: skip
        if fixed and reward.embedder != embedder:
            warnings.append(
                f"{' and '.join(f'{k}={v}' for k, v in fixed)}: the paper set these for {embedder}, and this recipe's "
                f"embedder is {reward.embedder}, whose distances spread differently: the reward may pay every "
                f"prediction or none. Set them to auto (measured for this embedder once per run), or to values you "
                f"measured for it."
            )
    return warnings
